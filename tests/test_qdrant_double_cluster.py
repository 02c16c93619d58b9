"""The Qdrant double's multi-peer mode (tests/qdrant_double/cluster.py) answers like a 3-peer Qdrant v1.18 cluster:
placement, the layout each peer shows, the streamed shard snapshot, shard recovery that resyncs the other replicas,
peers killed and revived on the same port, transfers, payload indexes and aliases. Raw HTTP with ``requests``, so
these check the wire QBM will see, and responses are validated against Qdrant's OpenAPI schemas."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from urllib.parse import urlsplit

import pytest
import requests

from tests.qdrant_double import DoubleCluster, QdrantDouble
from tests.test_qdrant_double import validate
from tests.waiting import wait_until

PEERS = [101, 102, 103]
#: Round robin over peers 101, 102, 103 for 6 shards with 2 replicas each.
PLACEMENT = {0: {101, 102}, 1: {102, 103}, 2: {103, 101}, 3: {101, 102}, 4: {102, 103}, 5: {103, 101}}
STREAM_NAME = re.compile(r'^attachment; filename="docs-shard-(\d+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}\.snapshot"$')


def result(url: str, method: str = "GET", path: str = "", **kwargs: object) -> object:
    resp = requests.request(method, url + path, timeout=30, **kwargs)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def layout(cluster: DoubleCluster, peer_id: int, name: str = "docs") -> dict:
    resp = requests.get(f"{cluster.rest_urls[peer_id]}/collections/{name}/cluster", timeout=10)
    assert resp.status_code == 200, resp.text
    validate(resp.json(), "CollectionClusterInfoResponse")
    return resp.json()["result"]


def stream(cluster: DoubleCluster, peer_id: int, shard_id: int, name: str = "docs") -> requests.Response:
    return requests.get(f"{cluster.rest_urls[peer_id]}/collections/{name}/shards/{shard_id}/snapshot", timeout=30)


def tmp_files(cluster: DoubleCluster) -> list:
    return [p for double in cluster.peers for p in double.store.tmp_dir.rglob("*") if p.is_file()]


def all_active(cluster: DoubleCluster, name: str = "docs") -> bool:
    return all(state == "Active" for peers in cluster.replicas(name).values() for state in peers.values())


@pytest.fixture
def docs(qdrant_cluster: DoubleCluster) -> str:
    qdrant_cluster.create_collection("docs", points=1200, size_bytes=96 * 1024)
    return "docs"


# ----- topology -------------------------------------------------------------------------------------------


def test_every_peer_reports_the_whole_cluster_with_one_leader(qdrant_cluster):
    assert qdrant_cluster.peer_ids == PEERS
    assert qdrant_cluster.url == qdrant_cluster.rest_urls[101]
    assert len(set(qdrant_cluster.rest_urls.values())) == 3
    for peer_id in PEERS:
        resp = requests.get(qdrant_cluster.rest_urls[peer_id] + "/cluster", timeout=10)
        validate(resp.json(), "ClusterStatusResponse")
        status = resp.json()["result"]
        assert status["status"] == "enabled" and status["peer_id"] == peer_id
        assert status["peers"] == {str(p): {"uri": qdrant_cluster.p2p_uris[p]} for p in PEERS}
        assert status["raft_info"]["leader"] == 101
        assert status["raft_info"]["role"] == ("Leader" if peer_id == 101 else "Follower")
        assert status["consensus_thread_status"]["consensus_thread_status"] == "working"
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+/", uri) for uri in qdrant_cluster.p2p_uris.values())
    assert set(qdrant_cluster.p2p_uris.values()).isdisjoint(qdrant_cluster.rest_urls.values())


def test_peers_are_plain_qdrant_doubles(qdrant_cluster, tmp_path):
    assert all(isinstance(p, QdrantDouble) for p in qdrant_cluster.peers)
    assert [qdrant_cluster.peer(p).peer_id for p in PEERS] == PEERS
    assert [p.root for p in qdrant_cluster.peers] == [qdrant_cluster.root / f"peer-{p}" for p in PEERS]
    with pytest.raises(KeyError):
        qdrant_cluster.peer(999)
    with DoubleCluster(tmp_path / "second", peers=2, first_peer_id=201) as second:  # another cluster beside it
        assert second.peer_ids == [201, 202]
        assert result(second.url, path="/cluster")["peer_id"] == 201



def test_peers_on_distinct_loopback_hosts_share_one_rest_port(tmp_path):
    """With distinct_hosts, "the p2p URI's host with the first peer's REST port" reaches every peer, as it does in
    a real cluster where every node serves REST on the same port."""
    with DoubleCluster(tmp_path / "c", distinct_hosts=True) as cluster:
        port = urlsplit(cluster.url).port
        for peer_id, uri in result(cluster.url, path="/cluster")["peers"].items():
            host = urlsplit(uri["uri"]).hostname
            assert result(f"http://{host}:{port}", path="/cluster")["peer_id"] == int(peer_id)
        assert sorted(urlsplit(u).hostname for u in cluster.rest_urls.values()) == [
            "127.0.0.1", "127.0.0.2", "127.0.0.3"]
        url = cluster.rest_urls[103]
        cluster.kill(103)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url + "/cluster", timeout=5)
        cluster.revive(103)
        assert cluster.rest_urls[103] == url
        assert result(url, path="/cluster")["peer_id"] == 103

def test_replicas_are_placed_round_robin_and_every_peer_shows_its_share(qdrant_cluster, docs):
    assert {s: set(peers) for s, peers in qdrant_cluster.replicas(docs).items()} == PLACEMENT
    shard_points = {s: qdrant_cluster.shard_points(docs, s) for s in PLACEMENT}
    assert sum(shard_points.values()) == qdrant_cluster.points_count(docs) == 1200
    for peer_id in PEERS:
        view = layout(qdrant_cluster, peer_id)
        assert view["peer_id"] == peer_id and view["shard_count"] == 6
        mine = {s for s, holders in PLACEMENT.items() if peer_id in holders}
        assert view["local_shards"] == [{"shard_id": s, "points_count": shard_points[s], "state": "Active"}
                                        for s in sorted(mine)]
        assert sorted((r["shard_id"], r["peer_id"]) for r in view["remote_shards"]) == sorted(
            (s, p) for s, holders in PLACEMENT.items() for p in holders if p != peer_id)
        assert {r["state"] for r in view["remote_shards"]} == {"Active"}
        assert view["shard_transfers"] == [] and "resharding_operations" not in view
        # Collection info and the exact count are the whole collection's on every peer.
        info = requests.get(f"{qdrant_cluster.rest_urls[peer_id]}/collections/docs", timeout=10).json()
        validate(info, "CollectionInfoResponse")
        assert info["result"]["config"]["params"]["shard_number"] == 6
        assert info["result"]["config"]["params"]["replication_factor"] == 2
        count = result(qdrant_cluster.rest_urls[peer_id], "POST", "/collections/docs/points/count",
                       json={"exact": True})
        assert count == {"count": 1200}
        assert result(qdrant_cluster.rest_urls[peer_id], path="/collections") == {"collections": [{"name": "docs"}]}


def test_replicas_of_a_shard_hold_the_same_data(qdrant_cluster, docs):
    for shard_id, holders in PLACEMENT.items():
        members = _segment_data(stream(qdrant_cluster, min(holders), shard_id).content)
        assert members == _segment_data(stream(qdrant_cluster, max(holders), shard_id).content)
        assert members  # something to compare


def test_create_and_delete_through_any_peer_act_on_every_peer(qdrant_cluster):
    body = {"vectors": {"size": 8, "distance": "Dot"}, "shard_number": 3, "replication_factor": 2,
            "hnsw_config": {"m": 32}, "optimizers_config": {"indexing_threshold": 5000},
            "wal_config": {"wal_capacity_mb": 64}, "on_disk_payload": False,
            "quantization_config": {"scalar": {"type": "int8", "always_ram": True}}}
    assert result(qdrant_cluster.rest_urls[102], "PUT", "/collections/fresh", json=body) is True
    again = requests.put(qdrant_cluster.rest_urls[103] + "/collections/fresh", json=body, timeout=10)
    assert again.status_code == 400
    assert again.json()["status"]["error"] == "Wrong input: Collection `fresh` already exists!"
    for peer_id in PEERS:
        info = result(qdrant_cluster.rest_urls[peer_id], path="/collections/fresh")
        assert info["points_count"] == 0
        params = info["config"]["params"]
        assert (params["shard_number"], params["replication_factor"], params["on_disk_payload"]) == (3, 2, False)
        assert params["vectors"] == {"size": 8, "distance": "Dot"}
        assert info["config"]["hnsw_config"]["m"] == 32
        assert info["config"]["optimizer_config"]["indexing_threshold"] == 5000
        assert info["config"]["wal_config"]["wal_capacity_mb"] == 64
        assert info["config"]["quantization_config"] == {"scalar": {"type": "int8", "always_ram": True}}
        assert len(layout(qdrant_cluster, peer_id, "fresh")["local_shards"]) == 2  # 3 shards x 2 replicas / 3
    assert {s: set(p) for s, p in qdrant_cluster.replicas("fresh").items()} == {
        0: {101, 102}, 1: {102, 103}, 2: {103, 101}}

    # Without a shard number Qdrant makes one shard per peer.
    assert result(qdrant_cluster.url, "PUT", "/collections/plain", json={"vectors": {"size": 4,
                                                                                      "distance": "Cosine"}})
    assert sorted(qdrant_cluster.replicas("plain")) == [0, 1, 2]

    assert result(qdrant_cluster.rest_urls[103], "DELETE", "/collections/fresh") is True
    assert not qdrant_cluster.collection_exists("fresh")
    for peer_id in PEERS:
        missing = requests.get(f"{qdrant_cluster.rest_urls[peer_id]}/collections/fresh", timeout=10)
        assert missing.status_code == 404
    assert result(qdrant_cluster.rest_urls[101], "DELETE", "/collections/fresh") is False


# ----- streamed shard snapshot ------------------------------------------------------------------------------


def test_streamed_shard_snapshot_is_chunked_and_leaves_nothing_on_the_peer(qdrant_cluster, docs):
    resp = stream(qdrant_cluster, 101, 2)
    assert resp.status_code == 200, resp.text
    assert "Content-Length" not in resp.headers
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert STREAM_NAME.fullmatch(resp.headers["Content-Disposition"]).group(1) == "2"
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        names = set(tar.getnames())
    assert {"replica_state.json", "shard_config.json", "wal"} <= names
    assert any(n.startswith("segments/") and n.endswith(".tar") for n in names)
    assert qdrant_cluster.snapshot_files_everywhere() == []
    assert tmp_files(qdrant_cluster) == []
    listed = result(qdrant_cluster.rest_urls[101], path="/collections/docs/shards/2/snapshots")
    assert listed == []


def test_streamed_shard_snapshot_refused_where_the_shard_is_not_local(qdrant_cluster, docs):
    resp = stream(qdrant_cluster, 101, 1)  # shard 1 lives on 102 and 103
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text == "Bad request: Shard 1 is not a local or queue proxy shard"
    missing = stream(qdrant_cluster, 101, 9)
    assert (missing.status_code, missing.text) == (404, "Not found: shard 9 not found")
    # The stored-snapshot routes say the same for a shard held elsewhere.
    create = requests.post(qdrant_cluster.rest_urls[101] + "/collections/docs/shards/1/snapshots", timeout=10)
    assert create.status_code == 400
    assert create.json()["status"]["error"] == "Bad request: Shard 1 is not a local or queue proxy shard"


def test_streamed_shard_snapshot_needs_write_access(tmp_path):
    with DoubleCluster(tmp_path / "c", peers=2, api_key="admin-key") as cluster:
        cluster.create_collection("docs", shard_number=2, replication_factor=1)
        for double in cluster.peers:
            double.read_only_api_key = "reader-key"
        read_only = requests.get(cluster.url + "/collections/docs/shards/0/snapshot",
                                 headers={"api-key": "reader-key"}, timeout=10)
        assert read_only.status_code == 403
        assert read_only.text == "Forbidden: Global manage access is required"
        assert requests.get(cluster.url + "/collections/docs/cluster", headers={"api-key": "reader-key"},
                            timeout=10).status_code == 200
        no_key = requests.get(cluster.url + "/collections/docs/shards/0/snapshot", timeout=10)
        assert no_key.status_code == 401
        admin = requests.get(cluster.url + "/collections/docs/shards/0/snapshot", headers={"api-key": "admin-key"},
                             timeout=10)
        assert admin.status_code == 200 and admin.content


def test_faults_apply_per_peer_on_the_streamed_endpoint(qdrant_cluster, docs):
    whole = stream(qdrant_cluster, 102, 0).content
    qdrant_cluster.peer(101).faults.cut_after(10_000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = requests.get(qdrant_cluster.rest_urls[101] + "/collections/docs/shards/0/snapshot", timeout=30).content
    # The other replica's peer is healthy, and so is the cut one for the next request.
    assert len(stream(qdrant_cluster, 102, 0).content) == len(whole)
    assert len(stream(qdrant_cluster, 101, 0).content) == len(whole)
    wait_until(lambda: tmp_files(qdrant_cluster) == [], 10, "the cut stream's archive to be removed",
               details=lambda: str(tmp_files(qdrant_cluster)))

    qdrant_cluster.peer(102).faults.fail_next(1, status=503, path_contains="/shards/0/snapshot")
    assert stream(qdrant_cluster, 102, 0).status_code == 503
    assert stream(qdrant_cluster, 102, 0).status_code == 200

    qdrant_cluster.peer(103).faults.corrupt_downloads(True)
    damaged = stream(qdrant_cluster, 103, 1).content
    assert damaged != stream(qdrant_cluster, 102, 1).content
    assert qdrant_cluster.snapshot_files_everywhere() == []


def test_a_single_node_streams_its_shards_too(qdrant):
    qdrant.create_collection("c", points=10, shard_number=2)
    resp = requests.get(qdrant.url + "/collections/c/shards/1/snapshot", timeout=10)
    assert resp.status_code == 200 and "Content-Length" not in resp.headers
    assert qdrant.snapshot_files("c", 1) == []
    assert list(qdrant.store.tmp_dir.iterdir()) == []


def test_a_peer_killed_mid_stream_breaks_the_stream(qdrant_cluster):
    qdrant_cluster.create_collection("big", size_bytes=6 * 1024 * 1024)  # 1 MiB a shard
    qdrant_cluster.peer(103).faults.throttle(500_000)
    resp = requests.get(qdrant_cluster.rest_urls[103] + "/collections/big/shards/1/snapshot", stream=True,
                        timeout=30)
    assert resp.status_code == 200
    chunks = resp.iter_content(4096)
    received = len(next(chunks))
    qdrant_cluster.kill(103)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in chunks:
            received += len(chunk)
    assert received < 1024 * 1024
    assert qdrant_cluster.replicas("big")[1] == {102: "Active", 103: "Dead"}
    assert len(stream(qdrant_cluster, 102, 1, "big").content) > 1024 * 1024  # the other replica serves it


# ----- collection snapshots through one peer -------------------------------------------------------------------


def test_a_collection_snapshot_through_one_peer_holds_only_its_shards(qdrant_cluster, docs):
    body = _collection_snapshot(qdrant_cluster, 101)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
    by_shard: dict[int, set[str]] = {}
    for name in names:
        head, _, rest = name.partition("/")
        if head.isdigit() and rest:
            by_shard.setdefault(int(head), set()).add(rest)
    assert set(by_shard) == set(PLACEMENT)
    for shard_id, holders in PLACEMENT.items():
        if 101 in holders:
            assert any(f.startswith("segments/") for f in by_shard[shard_id]), shard_id
        else:
            assert by_shard[shard_id] == {"replica_state.json", "shard_config.json"}, shard_id


def test_per_peer_collection_snapshots_restore_the_collection_peer_by_peer(qdrant_cluster, docs):
    """Qdrant's per-node recipe: each peer's collection snapshot recovered on the same peer after a drop."""
    before = {s: qdrant_cluster.shard_points(docs, s) for s in PLACEMENT}
    result(qdrant_cluster.url, "PUT", "/collections/docs/index", json={"field_name": "city", "field_schema": "keyword"})
    archives = {peer_id: _collection_snapshot(qdrant_cluster, peer_id) for peer_id in (101, 102)}
    result(qdrant_cluster.url, "DELETE", "/collections/docs")

    upload = requests.post(qdrant_cluster.rest_urls[101] + "/collections/docs/snapshots/upload",
                           params={"priority": "snapshot"}, files={"snapshot": ("p101.snapshot", archives[101])},
                           timeout=30)
    assert upload.status_code == 200, upload.text
    assert qdrant_cluster.wait_for_resync(10)
    assert {s: set(p) for s, p in qdrant_cluster.replicas(docs).items()} == PLACEMENT
    counts = {s: qdrant_cluster.shard_points(docs, s) for s in PLACEMENT}
    assert counts == {s: before[s] if 101 in holders else 0 for s, holders in PLACEMENT.items()}
    for peer_id in PEERS:  # the snapshot's payload indexes are the collection's, on every peer
        assert set(result(qdrant_cluster.rest_urls[peer_id], path="/collections/docs")["payload_schema"]) == {"city"}

    upload = requests.post(qdrant_cluster.rest_urls[102] + "/collections/docs/snapshots/upload",
                           params={"priority": "snapshot"}, files={"snapshot": ("p102.snapshot", archives[102])},
                           timeout=30)
    assert upload.status_code == 200, upload.text
    assert qdrant_cluster.wait_for_resync(10)
    assert all_active(qdrant_cluster)
    assert result(qdrant_cluster.rest_urls[103], "POST", "/collections/docs/points/count", json={}) == {
        "count": 1200}
    for peer_id in PEERS:  # every replica has its shard's data, whichever peer's snapshot brought it
        for local in layout(qdrant_cluster, peer_id)["local_shards"]:
            assert local["points_count"] == before[local["shard_id"]]


# ----- shard recovery -----------------------------------------------------------------------------------


def test_shard_upload_recovery_resyncs_the_other_replica(qdrant_cluster, docs):
    qdrant_cluster.create_collection("source", points=6000, size_bytes=96 * 1024)
    archive = stream(qdrant_cluster, 101, 0, "source").content
    recovered_points = qdrant_cluster.shard_points("source", 0)
    assert recovered_points != qdrant_cluster.shard_points(docs, 0)
    checksum = hashlib.sha256(archive).hexdigest()

    qdrant_cluster.resync_gate.clear()  # hold the resync so the state in between can be seen
    upload = requests.post(
        qdrant_cluster.rest_urls[102] + "/collections/docs/shards/0/snapshots/upload",
        params={"priority": "snapshot", "checksum": checksum, "wait": "true"},
        files={"snapshot": ("s0.snapshot", archive)}, timeout=30)
    assert upload.status_code == 200, upload.text
    assert qdrant_cluster.replicas(docs)[0] == {101: "Dead", 102: "Active"}
    remote = {(r["shard_id"], r["peer_id"]): r["state"] for r in layout(qdrant_cluster, 103)["remote_shards"]}
    assert remote[(0, 101)] == "Dead" and remote[(0, 102)] == "Active"

    qdrant_cluster.resync_gate.set()
    wait_until(lambda: all_active(qdrant_cluster), 10, "every replica to be Active again",
               details=lambda: str(qdrant_cluster.replicas(docs)))
    for peer_id in (101, 102):
        local = {s["shard_id"]: s["points_count"] for s in layout(qdrant_cluster, peer_id)["local_shards"]}
        assert local[0] == recovered_points
    assert _segment_data(stream(qdrant_cluster, 101, 0).content) == _segment_data(archive)
    assert layout(qdrant_cluster, 101)["shard_transfers"] == []
    assert result(qdrant_cluster.rest_urls[103], "POST", "/collections/docs/points/count", json={})["count"] == (
        qdrant_cluster.points_count(docs))


def test_shard_recover_from_a_url_resyncs_and_checks_the_checksum(qdrant_cluster, docs):
    qdrant_cluster.create_collection("source", points=6000, size_bytes=96 * 1024)
    location = f"{qdrant_cluster.rest_urls[103]}/collections/source/shards/1/snapshot"
    wrong = requests.put(qdrant_cluster.rest_urls[102] + "/collections/docs/shards/1/snapshots/recover",
                         json={"location": location, "priority": "snapshot", "checksum": "0" * 64}, timeout=30)
    assert wrong.status_code == 400
    assert all_active(qdrant_cluster)  # nothing happened

    ok = requests.put(qdrant_cluster.rest_urls[102] + "/collections/docs/shards/1/snapshots/recover",
                      json={"location": location, "priority": "snapshot"}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert qdrant_cluster.wait_for_resync(10)
    assert all_active(qdrant_cluster)
    expected = qdrant_cluster.shard_points("source", 1)
    for peer_id in (102, 103):
        local = {s["shard_id"]: s["points_count"] for s in layout(qdrant_cluster, peer_id)["local_shards"]}
        assert local[1] == expected


def test_shard_recovery_is_refused_on_a_peer_without_the_shard(qdrant_cluster, docs):
    archive = stream(qdrant_cluster, 102, 1).content
    upload = requests.post(qdrant_cluster.rest_urls[101] + "/collections/docs/shards/1/snapshots/upload",
                           files={"snapshot": ("s1.snapshot", archive)}, timeout=30)
    assert upload.status_code == 400
    assert upload.json()["status"]["error"] == "Bad request: Shard 1 is not a local or queue proxy shard"
    assert qdrant_cluster.snapshot_files_everywhere() == []


# ----- peers going away -------------------------------------------------------------------------------------


def test_a_killed_peer_refuses_connections_and_comes_back_on_the_same_port(qdrant_cluster, docs):
    url = qdrant_cluster.rest_urls[102]
    qdrant_cluster.kill(102)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/cluster", timeout=5)
    remote = {(r["shard_id"], r["peer_id"]): r["state"] for r in layout(qdrant_cluster, 101)["remote_shards"]}
    assert {state for (_, peer), state in remote.items() if peer == 102} == {"Dead"}
    assert {state for (_, peer), state in remote.items() if peer == 103} == {"Active"}
    # The rest of the cluster still answers for the whole collection.
    assert result(qdrant_cluster.url, "POST", "/collections/docs/points/count", json={}) == {"count": 1200}

    qdrant_cluster.revive(102)
    assert qdrant_cluster.rest_urls[102] == url
    assert result(url, path="/cluster")["peer_id"] == 102
    assert all_active(qdrant_cluster)


def test_a_replica_recovered_while_its_peer_is_down_gets_the_data_when_it_returns(qdrant_cluster, docs):
    qdrant_cluster.create_collection("source", points=6000, size_bytes=96 * 1024)
    archive = stream(qdrant_cluster, 101, 3, "source").content
    qdrant_cluster.kill(102)
    upload = requests.post(qdrant_cluster.rest_urls[101] + "/collections/docs/shards/3/snapshots/upload",
                           files={"snapshot": ("s3.snapshot", archive)}, timeout=30)
    assert upload.status_code == 200, upload.text
    assert qdrant_cluster.wait_for_resync(10)
    assert qdrant_cluster.replicas(docs)[3] == {101: "Active", 102: "Dead"}
    qdrant_cluster.revive(102)
    assert qdrant_cluster.replicas(docs)[3] == {101: "Active", 102: "Active"}
    assert _segment_data(stream(qdrant_cluster, 102, 3).content) == _segment_data(archive)


def test_replica_states_set_by_a_test_show_on_every_peer(qdrant_cluster, docs):
    qdrant_cluster.set_replica_state(docs, 4, 103, "Partial")
    assert {s["shard_id"]: s["state"] for s in layout(qdrant_cluster, 103)["local_shards"]}[4] == "Partial"
    remote = {(r["shard_id"], r["peer_id"]): r["state"] for r in layout(qdrant_cluster, 101)["remote_shards"]}
    assert remote[(4, 103)] == "Partial"
    with pytest.raises(ValueError):
        qdrant_cluster.set_replica_state(docs, 4, 101, "Dead")  # 101 holds no replica of shard 4


# ----- transfers and resharding -------------------------------------------------------------------------------


def test_a_shard_transfer_is_shown_until_it_finishes(qdrant_cluster, docs):
    qdrant_cluster.start_transfer(docs, 0, 101, 103)
    expected = [{"shard_id": 0, "from": 101, "to": 103, "sync": False, "method": "stream_records"}]
    for peer_id in PEERS:
        assert layout(qdrant_cluster, peer_id)["shard_transfers"] == expected
    assert {s["shard_id"]: s["state"] for s in layout(qdrant_cluster, 103)["local_shards"]}[0] == "Partial"

    qdrant_cluster.finish_transfers(docs)
    assert qdrant_cluster.replicas(docs)[0] == {102: "Active", 103: "Active"}
    assert all(layout(qdrant_cluster, p)["shard_transfers"] == [] for p in PEERS)
    assert stream(qdrant_cluster, 101, 0).status_code == 400  # moved away
    assert _segment_data(stream(qdrant_cluster, 103, 0).content) == _segment_data(
        stream(qdrant_cluster, 102, 0).content)
    assert qdrant_cluster.points_count(docs) == 1200


def test_resharding_is_shown_until_it_finishes(qdrant_cluster, docs):
    qdrant_cluster.start_resharding(docs)
    for peer_id in PEERS:
        assert layout(qdrant_cluster, peer_id)["resharding_operations"] == [
            {"direction": "up", "shard_id": 6, "peer_id": 101}]
    qdrant_cluster.finish_resharding(docs)
    assert "resharding_operations" not in layout(qdrant_cluster, 102)


# ----- payload indexes and aliases ----------------------------------------------------------------------------


def test_a_payload_index_made_on_one_peer_is_on_every_peer(qdrant_cluster, docs):
    created = result(qdrant_cluster.rest_urls[103], "PUT", "/collections/docs/index",
                     params={"wait": "true"}, json={"field_name": "city", "field_schema": "keyword"})
    assert created["status"] == "completed"
    result(qdrant_cluster.rest_urls[101], "PUT", "/collections/docs/index",
           json={"field_name": "year", "field_schema": {"type": "integer", "range": True, "lookup": False}})
    for peer_id in PEERS:
        info = requests.get(f"{qdrant_cluster.rest_urls[peer_id]}/collections/docs", timeout=10).json()
        validate(info, "CollectionInfoResponse")
        schema = info["result"]["payload_schema"]
        assert schema["city"] == {"data_type": "keyword", "points": 1200}
        assert schema["year"]["data_type"] == "integer" and schema["year"]["params"]["range"] is True
    assert qdrant_cluster.payload_indexes(docs) == {
        "city": "keyword", "year": {"type": "integer", "range": True, "lookup": False}}

    # A collection snapshot carries the index definitions (payload_index.json).
    name = result(qdrant_cluster.rest_urls[102], "POST", "/collections/docs/snapshots")["name"]
    body = requests.get(f"{qdrant_cluster.rest_urls[102]}/collections/docs/snapshots/{name}", timeout=30).content
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert b'"city": "keyword"' in tar.extractfile("payload_index.json").read()

    bad = requests.put(qdrant_cluster.url + "/collections/docs/index",
                       json={"field_name": "x", "field_schema": "colour"}, timeout=10)
    assert bad.status_code == 400
    missing = requests.put(qdrant_cluster.url + "/collections/nope/index",
                           json={"field_name": "x", "field_schema": "keyword"}, timeout=10)
    assert missing.status_code == 404


def test_aliases_are_cluster_wide(qdrant_cluster, docs):
    qdrant_cluster.create_collection("other", points=10, shard_number=2)
    done = result(qdrant_cluster.rest_urls[101], "POST", "/collections/aliases", json={"actions": [
        {"create_alias": {"collection_name": "docs", "alias_name": "live"}},
        {"create_alias": {"collection_name": "other", "alias_name": "old"}}]})
    assert done is True
    for peer_id in PEERS:
        url = qdrant_cluster.rest_urls[peer_id]
        assert result(url, path="/aliases") == {"aliases": [
            {"alias_name": "live", "collection_name": "docs"}, {"alias_name": "old", "collection_name": "other"}]}
        assert result(url, path="/collections/docs/aliases") == {
            "aliases": [{"alias_name": "live", "collection_name": "docs"}]}
    assert qdrant_cluster.aliases() == {"live": "docs", "old": "other"}

    # All or nothing: the second action fails, so the first is not applied either.
    refused = requests.post(qdrant_cluster.rest_urls[102] + "/collections/aliases", json={"actions": [
        {"delete_alias": {"alias_name": "live"}},
        {"create_alias": {"collection_name": "missing", "alias_name": "x"}}]}, timeout=10)
    assert refused.status_code == 404
    assert refused.json()["status"]["error"] == "Not found: Collection `missing` doesn't exist!"
    assert qdrant_cluster.aliases() == {"live": "docs", "old": "other"}

    result(qdrant_cluster.rest_urls[103], "POST", "/collections/aliases", json={"actions": [
        {"delete_alias": {"alias_name": "old"}}]})
    assert qdrant_cluster.aliases() == {"live": "docs"}
    result(qdrant_cluster.rest_urls[102], "DELETE", "/collections/docs")
    assert qdrant_cluster.aliases() == {}  # dropping a collection drops its aliases
    assert result(qdrant_cluster.url, path="/aliases") == {"aliases": []}



def test_a_single_node_keeps_aliases_and_indexes_too(qdrant):
    qdrant.create_collection("c", points=7)
    result(qdrant.url, "PUT", "/collections/c/index", params={"wait": "false"},
           json={"field_name": "tag", "field_schema": {"type": "keyword", "is_tenant": True}})
    assert result(qdrant.url, path="/collections/c")["payload_schema"] == {
        "tag": {"data_type": "keyword", "params": {"type": "keyword", "is_tenant": True}, "points": 7}}
    result(qdrant.url, "POST", "/collections/aliases", json={"actions": [
        {"create_alias": {"collection_name": "c", "alias_name": "a1"}}]})
    result(qdrant.url, "POST", "/collections/aliases", json={"actions": [
        {"rename_alias": {"old_alias_name": "a1", "new_alias_name": "a2"}}]})
    assert result(qdrant.url, path="/collections/c/aliases") == {
        "aliases": [{"alias_name": "a2", "collection_name": "c"}]}
    clash = requests.post(qdrant.url + "/collections/aliases", json={"actions": [
        {"create_alias": {"collection_name": "c", "alias_name": "c"}}]}, timeout=10)
    assert clash.status_code == 400
    gone = requests.post(qdrant.url + "/collections/aliases", json={"actions": [
        {"delete_alias": {"alias_name": "nope"}}]}, timeout=10)
    assert gone.status_code == 404
    malformed = requests.post(qdrant.url + "/collections/aliases", json={"actions": [{"make_alias": {}}]},
                              timeout=10)
    assert malformed.status_code == 400
    result(qdrant.url, "DELETE", "/collections/c")
    assert result(qdrant.url, path="/aliases") == {"aliases": []}

# ----- helpers ---------------------------------------------------------------------------------------------------


def _collection_snapshot(cluster: DoubleCluster, peer_id: int) -> bytes:
    url = cluster.rest_urls[peer_id]
    name = result(url, "POST", "/collections/docs/snapshots")["name"]
    body = requests.get(f"{url}/collections/docs/snapshots/{name}", timeout=30).content
    result(url, "DELETE", f"/collections/docs/snapshots/{name}")
    return body


def _segment_data(archive: bytes) -> list[bytes]:
    """The data bytes of every segment in a shard snapshot (order by content: segment uuids differ per copy)."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            if member.name.startswith("segments/") and member.name.endswith(".tar"):
                with tarfile.open(fileobj=tar.extractfile(member)) as segment:
                    found.append(segment.extractfile("snapshot/files/data.bin").read())
    return sorted(found)

