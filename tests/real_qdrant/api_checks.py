"""QBM's discovery and snapshot endpoints held against what the real Qdrant answers to the same questions.

Qdrant's raw answers are validated with the schemas the Qdrant double is held to (extracted from Qdrant's OpenAPI
spec, ``tests/fixtures``); QBM's answers are checked against QBM's own served OpenAPI document by the client
(``tests/api/helpers.CheckedClient``) and compared field by field with Qdrant's."""

from __future__ import annotations

from typing import Any

from shared.runtime.timeutil import parse_iso, to_iso
from tests.real_qdrant.qdrant_process import QdrantNode
from tests.test_qdrant_double import validate

API = "/api/v1"


def qdrant_answer(node: QdrantNode, method: str, path: str, definition: str, **kwargs: Any) -> Any:
    """Qdrant's answer, validated against ``definition`` of its OpenAPI schemas; returns ``result``."""
    body = node.request(method, path, **kwargs).json()
    validate(body, definition)
    return body["result"]


def qbm_answer(client: Any, method: str, path: str, status: int = 200) -> Any:
    resp = client.open(API + path, method)
    assert resp.status_code == status, (path, resp.status_code, resp.get_json())
    body = resp.get_json()
    assert body["status"] == "ok", body
    return body["result"]


def as_qbm_snapshot(raw: dict) -> dict:
    return {"name": raw["name"], "creation_time": to_iso(parse_iso(raw["creation_time"])), "size": raw["size"],
            "checksum": raw["checksum"]}


def check_cluster(client: Any, node: QdrantNode, *, peers: int) -> dict:
    raw = qdrant_answer(node, "GET", "/cluster", "ClusterStatusResponse")
    ours = qbm_answer(client, "GET", "/cluster")
    assert ours["status"] == "green", ours
    if peers == 1:
        assert raw == {"status": "disabled"}
        assert ours["mode"] == "single" and ours["raft_info"] is None and ours["peers"] == {}
        return ours
    assert ours["mode"] == "cluster" and ours["reason"] is None
    assert ours["peer_id"] == raw["peer_id"] == node.peer_id()
    assert len(raw["peers"]) == peers
    assert ours["peers"] == {pid: info["uri"] for pid, info in raw["peers"].items()}
    for key in ("term", "leader", "is_voter"):
        assert ours["raft_info"][key] == raw["raft_info"][key], key
    assert ours["raft_info"]["role"] in ("Leader", "Follower")
    return ours


def check_collection(client: Any, node: QdrantNode, collection: str, *, shard_number: int,
                     replication_factor: int, points: int) -> None:
    names = qdrant_answer(node, "GET", "/collections", "CollectionsListResponse")["collections"]
    assert collection in qbm_answer(client, "GET", "/collections")
    assert sorted(qbm_answer(client, "GET", "/collections")) == sorted(c["name"] for c in names)

    raw = qdrant_answer(node, "GET", f"/collections/{collection}", "CollectionInfoResponse")
    ours = qbm_answer(client, "GET", f"/collections/{collection}")
    assert ours["name"] == collection
    for key in ("status", "optimizer_status", "points_count", "indexed_vectors_count", "segments_count"):
        assert ours[key] == raw[key], key
    assert ours["points_count"] == points
    params = ours["config"]["params"]
    assert params["shard_number"] == raw["config"]["params"]["shard_number"] == shard_number
    assert params["replication_factor"] == raw["config"]["params"]["replication_factor"] == replication_factor
    assert params["vectors"] == {"size": 128, "distance": "Cosine"}
    for key in ("hnsw_config", "optimizer_config", "wal_config"):
        assert ours["config"][key] == raw["config"][key], key


def check_shard_layout(client: Any, node: QdrantNode, collection: str, *, shard_number: int,
                       replication_factor: int, peers: int) -> dict:
    raw = qdrant_answer(node, "GET", f"/collections/{collection}/cluster", "CollectionClusterInfoResponse")
    ours = qbm_answer(client, "GET", f"/collections/{collection}/cluster")
    shards = ours.pop("shards")
    assert ours == raw  # passed through as Qdrant gives it, plus every replica of every shard:
    replicas: dict[int, set[tuple[int, str]]] = {}
    for s in raw["local_shards"]:
        replicas.setdefault(s["shard_id"], set()).add((raw["peer_id"], s["state"]))
    for s in raw["remote_shards"]:
        replicas.setdefault(s["shard_id"], set()).add((s["peer_id"], s["state"]))
    assert {s["shard_id"]: {(r["peer_id"], r["state"]) for r in s["replicas"]} for s in shards} == replicas
    assert all(len(s["replicas"]) == replication_factor for s in shards)
    assert ours["shard_count"] == shard_number
    local = [s["shard_id"] for s in ours["local_shards"]]
    remote = [(s["shard_id"], s["peer_id"]) for s in ours["remote_shards"]]
    assert len(local) + len(remote) == shard_number * replication_factor
    assert len(local) == shard_number * replication_factor // peers
    assert {s["state"] for s in ours["local_shards"] + ours["remote_shards"]} == {"Active"}
    return ours


def check_snapshots(client: Any, node: QdrantNode, collection: str, shard_id: int) -> None:
    """Collection and shard snapshots created, listed and deleted through QBM (a shard snapshot also created
    directly): QBM and Qdrant list the same."""
    assert qdrant_answer(node, "GET", f"/collections/{collection}/snapshots", "SnapshotListResponse") == []
    created = qbm_answer(client, "POST", f"/collections/{collection}/snapshots")
    listed_raw = qdrant_answer(node, "GET", f"/collections/{collection}/snapshots", "SnapshotListResponse")
    assert [as_qbm_snapshot(s) for s in listed_raw] == [created]
    assert qbm_answer(client, "GET", f"/collections/{collection}/snapshots") == [created]
    assert created["name"].startswith(f"{collection}-") and created["name"].endswith(".snapshot")
    assert len(created["checksum"]) == 64 and created["size"] > 0

    # Shard snapshots, one made through QBM, then one Qdrant was asked for directly (one after the other: Qdrant
    # names snapshots by the second, and a second one within the same second would replace the first).
    shard = f"/collections/{collection}/shards/{shard_id}/snapshots"
    through_qbm = qbm_answer(client, "POST", shard)
    assert through_qbm["name"].startswith(f"{collection}-shard-{shard_id}-")
    raw_shard = qdrant_answer(node, "GET", shard, "SnapshotListResponse")
    assert [as_qbm_snapshot(s) for s in raw_shard] == [through_qbm] == qbm_answer(client, "GET", shard)
    assert qbm_answer(client, "DELETE", f"{shard}/{through_qbm['name']}") is True
    assert qdrant_answer(node, "GET", shard, "SnapshotListResponse") == []
    direct = qdrant_answer(node, "POST", f"{shard}?wait=true", "SnapshotCreateResponse")
    assert qbm_answer(client, "GET", shard) == [as_qbm_snapshot(direct)]
    assert qbm_answer(client, "DELETE", f"{shard}/{direct['name']}") is True

    assert qbm_answer(client, "DELETE", f"/collections/{collection}/snapshots/{created['name']}") is True
    assert qdrant_answer(node, "GET", f"/collections/{collection}/snapshots", "SnapshotListResponse") == []
    assert qdrant_answer(node, "GET", f"/collections/{collection}/shards/{shard_id}/snapshots",
                         "SnapshotListResponse") == []
