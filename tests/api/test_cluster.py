"""GET /cluster: health colour, Raft info and peers from the Qdrant double."""

from __future__ import annotations

from api.cluster import summarize
from tests.api.helpers import API, closed_port_url, error_of, result_of


def test_single_node_is_green_without_raft_info(client):
    resp = client.get(f"{API}/cluster")
    assert resp.status_code == 200
    result = result_of(resp)
    assert result["status"] == "green"
    assert result["mode"] == "single"
    assert result["raft_info"] is None
    assert result["peers"] == {}
    assert result["reason"] is None


def test_cluster_mode_reports_raft_info_and_peers(client, qdrant):
    # Peer 222's p2p URI is on the double's host: by the default rule QBM reaches it at QBM_QDRANT_URL's port.
    qdrant.enable_cluster({222: "http://127.0.0.1:6335/"}, term=3, commit=42)
    result = result_of(client.get(f"{API}/cluster"))
    assert result["status"] == "green"
    assert result["mode"] == "cluster"
    assert result["peer_id"] == qdrant.peer_id
    assert result["raft_info"] == {
        "term": 3,
        "commit": 42,
        "pending_operations": 0,
        "leader": qdrant.peer_id,
        "role": "Leader",
        "is_voter": True,
    }
    assert result["peers"]["222"] == "http://127.0.0.1:6335/"
    assert str(qdrant.peer_id) in result["peers"]
    assert {m["peer_id"]: (m["rest_url"], m["reachable"]) for m in result["members"]} == {
        qdrant.peer_id: (qdrant.url, True), 222: (qdrant.url, True)}
    # Qdrant's extra fields are kept.
    assert result["consensus_thread_status"]["consensus_thread_status"] == "working"
    assert result["message_send_failures"] == {}


def test_a_peer_qbm_cannot_reach_makes_the_cluster_yellow(make_client, qdrant):
    closed = closed_port_url()
    client = make_client(qdrant_url=qdrant.url, qdrant_peers=(("http://10.9.9.9:6335", closed),))
    qdrant.enable_cluster({222: "http://10.9.9.9:6335/", 333: "http://127.0.0.1:6335/"})
    result = result_of(client.get(f"{API}/cluster"))
    members = {m["peer_id"]: m for m in result["members"]}
    # 222 is mapped by its p2p URI (QBM_QDRANT_PEERS); 333 by the default rule.
    assert (members[222]["rest_url"], members[222]["reachable"]) == (closed, False)
    assert "cannot reach Qdrant" in members[222]["error"]
    assert (members[333]["rest_url"], members[333]["reachable"]) == (qdrant.url, True)
    assert result["status"] == "yellow" and "222" in result["reason"]


def test_follower_sees_the_leader(client, qdrant):
    qdrant.enable_cluster({222: "http://127.0.0.1:6335/"}, leader=222)
    result = result_of(client.get(f"{API}/cluster"))
    assert result["status"] == "green"
    assert result["raft_info"]["leader"] == 222
    assert result["raft_info"]["role"] == "Follower"


def test_unreachable_qdrant_is_red_not_an_error(offline_client):
    resp = offline_client.get(f"{API}/cluster")
    assert resp.status_code == 200
    result = result_of(resp)
    assert result["status"] == "red"
    assert result["mode"] == "unknown"
    assert "not reachable" in result["reason"]


def test_qdrant_error_answer_is_502_naming_the_status(client, qdrant):
    qdrant.faults.fail_next(1, status=500, path_contains="/cluster")
    resp = client.get(f"{API}/cluster")
    assert resp.status_code == 502
    assert "500" in error_of(resp)


def _enabled(**raft: object) -> dict:
    info = {"term": 1, "commit": 1, "pending_operations": 0, "leader": 1, "role": "Leader", "is_voter": True}
    info.update(raft)
    return {"status": "enabled", "peer_id": 1, "peers": {"1": {"uri": "http://a/"}}, "raft_info": info,
            "consensus_thread_status": {"consensus_thread_status": "working"}, "message_send_failures": {}}


def test_colour_rules():
    assert summarize(_enabled())["status"] == "green"
    no_leader = summarize(_enabled(leader=None))
    assert no_leader["status"] == "red" and "leader" in no_leader["reason"]
    pending = summarize(_enabled(pending_operations=2))
    assert pending["status"] == "yellow" and "pending" in pending["reason"]
    failures = _enabled()
    failures["message_send_failures"] = {"http://b/": {"count": 3, "latest_error": "timeout"}}
    assert summarize(failures)["status"] == "yellow"
    stopped = _enabled()
    stopped["consensus_thread_status"] = {"consensus_thread_status": "stopped_with_err", "err": "x"}
    assert summarize(stopped)["status"] == "red"
    # red wins over yellow
    assert summarize(_enabled(leader=None, pending_operations=5))["status"] == "red"
    single = summarize({"status": "disabled"})
    assert single == {"status": "green", "mode": "single", "peer_id": None, "raft_info": None, "peers": {},
                      "reason": None}
