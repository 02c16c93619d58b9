"""GET /cluster: Qdrant's cluster state with a green/yellow/red summary.

The rules for the colour live in :data:`api.schemas.cluster.HEALTH_RULES` (the docs quote them). An
unreachable Qdrant is an answer here, not an error: the endpoint exists to tell a dashboard how the
cluster is, and "red, because Qdrant does not answer" is that. /readyz is where unreachability is a 503.
"""

from __future__ import annotations

from typing import Any

from api.envelope import Blueprint
from api.schemas.cluster import HEALTH_RULES, ClusterSchema
from api.services import services
from shared.adapters.qdrant import QdrantError, QdrantUnavailable
from shared.adapters.topology import Peer

blp = Blueprint("cluster", __name__, description="Cluster health")

_OWN_FIELDS = ("status", "peer_id", "raft_info", "peers")


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Qdrant's GET /cluster result -> our cluster object (see HEALTH_RULES)."""
    if raw.get("status") == "disabled" or not raw.get("raft_info"):
        result: dict[str, Any] = {
            "status": "green",
            "mode": "single",
            "peer_id": raw.get("peer_id"),
            "raft_info": None,
            "peers": {},
            "reason": None,
        }
    else:
        raft = dict(raw["raft_info"])
        peers = {str(pid): (info or {}).get("uri") for pid, info in (raw.get("peers") or {}).items()}
        failures = raw.get("message_send_failures") or {}
        consensus = (raw.get("consensus_thread_status") or {}).get("consensus_thread_status")
        pending = int(raft.get("pending_operations") or 0)
        reasons_red = []
        reasons_yellow = []
        if raft.get("leader") is None:
            reasons_red.append("the Raft state has no leader")
        if consensus == "stopped_with_err":
            reasons_red.append("the consensus thread stopped with an error")
        if pending > 0:
            reasons_yellow.append(f"{pending} pending Raft operation(s)")
        if failures:
            reasons_yellow.append(f"message send failures to {len(failures)} peer(s)")
        if consensus is not None and consensus not in ("working", "stopped_with_err"):
            reasons_yellow.append(f"the consensus thread is {consensus}")
        status = "red" if reasons_red else "yellow" if reasons_yellow else "green"
        result = {
            "status": status,
            "mode": "cluster",
            "peer_id": raw.get("peer_id"),
            "raft_info": raft,
            "peers": peers,
            "reason": "; ".join(reasons_red or reasons_yellow) or None,
        }
    for key, value in raw.items():
        if key not in _OWN_FIELDS and key not in result:
            result[key] = value
    return result


@blp.route("/cluster")
@blp.response(200, ClusterSchema, description="Cluster health. " + HEALTH_RULES)
@blp.errors(401, 502)
def get_cluster() -> dict:
    """Cluster health, Raft consensus info and peers

    Answers 200 with status red (and a reason) when Qdrant cannot be reached; 502 when Qdrant answers
    with an error.
    """
    try:
        raw = services().qdrant.cluster_status()
    except QdrantError as exc:
        if not isinstance(exc, QdrantUnavailable) and getattr(exc, "status", None) is not None:
            raise
        return {
            "status": "red",
            "mode": "unknown",
            "peer_id": None,
            "raft_info": None,
            "peers": {},
            "reason": f"Qdrant is not reachable: {getattr(exc, 'message', None) or exc}",
        }
    result = summarize(raw)
    if result["mode"] == "cluster":
        result["members"] = _members(raw)
        unreachable = [m["peer_id"] for m in result["members"] if not m["reachable"]]
        if unreachable and result["status"] == "green":
            result["status"] = "yellow"
            result["reason"] = f"QBM cannot reach peer(s) {', '.join(map(str, unreachable))} at their REST URL"
    return result


def _members(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Each peer with its REST URL and whether QBM reaches it there (what backup sets need)."""
    topology = services().topology
    members = []
    for pid, info in sorted((raw.get("peers") or {}).items(), key=lambda item: int(item[0])):
        uri = (info or {}).get("uri")
        peer = Peer(int(pid), uri, topology.rest_url(int(pid), uri, is_self=int(pid) == raw.get("peer_id")))
        error = topology.reachable(peer)
        members.append({"peer_id": peer.peer_id, "uri": uri, "rest_url": peer.rest_url,
                        "reachable": error is None, "error": error})
    return members
