"""Backup sets against a real three-peer Qdrant cluster: a collection of 20,000 points in 6 shards with 2 replicas
each is backed up shard by shard from the replicas (nothing staged on the nodes), restored point for point into
the same cluster and into a separate 2-peer cluster, completed from the other replicas when a peer dies mid-way,
and held back while a shard transfer runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import WorkerProcess, make_engine_config, wait_for_job, worker_env_for
from tests.real_qdrant import data
from tests.real_qdrant.helpers import (
    cluster_engine_config,
    listed_backups,
    post_job,
    register_storage,
    run_job,
    sha256_of,
    storage_backend,
    stored_manifest,
)
from tests.real_qdrant.qdrant_process import QdrantCluster, QdrantNode

pytestmark = pytest.mark.real_qdrant

SHARDS, REPLICAS = 6, 2
SET_TIMEOUT = 240.0


@pytest.fixture
def set_docs(qdrant_cluster: QdrantCluster) -> Iterator[str]:
    name = f"set-{uuid.uuid4().hex[:8]}"
    first = qdrant_cluster.peers[0]
    data.create_collection(first, name, shard_number=SHARDS, replication_factor=REPLICAS)
    data.wait_replicas_active(qdrant_cluster.peers, name)
    yield name
    for collection in first.result("GET", "/collections")["collections"]:
        if collection["name"].startswith(name):
            data.drop_collection(first, collection["name"])


def snapshot_files(peers: list[QdrantNode]) -> list[Path]:
    """Every file in every peer's snapshots folder (a set must leave none behind)."""
    return sorted(p for peer in peers if peer.snapshots_path.exists() for p in peer.snapshots_path.rglob("*")
                  if p.is_file())


def placement(peers: list[QdrantNode], collection: str) -> dict[int, set[int]]:
    holders: dict[int, set[int]] = {}
    for peer in peers:
        info = peer.result("GET", f"/collections/{collection}/cluster")
        for shard in info["local_shards"]:
            holders.setdefault(shard["shard_id"], set()).add(info["peer_id"])
    return holders


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_set_of_a_distributed_collection_restores_every_point(request, app, client, jobs, worker, qdrant_cluster,
                                                                set_docs, engine_config, kind):
    first = qdrant_cluster.peers[0]
    if kind == "local":
        storage = register_storage(client, "local", engine_config)
    else:
        storage = register_storage(client, "s3", engine_config, request.getfixturevalue("s3_server"),
                                   request.getfixturevalue("s3_bucket"))
    before = data.scroll_all(first.url, first.api_key, set_docs)
    assert len(before) == data.POINTS
    holders = placement(qdrant_cluster.peers, set_docs)

    done = run_job(client, jobs, worker, type="backup", collection_name=set_docs, timeout=SET_TIMEOUT)
    manifest = stored_manifest(app, storage["id"], set_docs, done["snapshot_name"])
    assert manifest["kind"] == "set" and manifest["points_count"] == data.POINTS
    assert manifest["qdrant_version"] == first.get("/")["version"]
    assert sorted(s["shard_id"] for s in manifest["shards"]) == list(range(SHARDS))
    backend = storage_backend(app, storage["id"])
    for shard in manifest["shards"]:
        assert shard["peer_id"] in holders[shard["shard_id"]]
        assert sha256_of(backend, shard["key"]) == shard["sha256"]
    assert len({s["peer_id"] for s in manifest["shards"]}) >= 2  # streamed from several peers
    assert manifest["payload_schema"][data.INDEXED_FIELD]["data_type"] == "integer"
    assert snapshot_files(qdrant_cluster.peers) == []  # nothing staged or left on any node
    assert [b["backup_id"] for b in listed_backups(client, storage["id"], set_docs)] == [done["snapshot_name"]]

    data.drop_collection(first, set_docs)
    done = run_job(client, jobs, worker, type="restore", collection_name=set_docs,
                   snapshot_name=done["snapshot_name"], timeout=SET_TIMEOUT)
    assert done["metadata"]["restored_points"] == data.POINTS
    assert done["metadata"]["shard_counts_checked"] == SHARDS  # Qdrant's per-shard figures added up: compared
    data.wait_replicas_active(qdrant_cluster.peers, set_docs, timeout=120)
    info = first.result("GET", f"/collections/{set_docs}")
    assert info["config"]["params"]["shard_number"] == SHARDS
    assert info["config"]["params"]["replication_factor"] == REPLICAS
    assert info["payload_schema"][data.INDEXED_FIELD]["data_type"] == "integer"
    for peer in qdrant_cluster.peers:
        assert data.exact_count(peer, set_docs) == data.POINTS
    assert data.differences(before, data.scroll_all(first.url, first.api_key, set_docs)) == []
    assert snapshot_files(qdrant_cluster.peers) == []  # the uploaded shard files were removed


def test_a_set_restores_into_a_single_node(app, client, jobs, worker, qdrant_cluster, set_docs, engine_config,
                                           qdrant_node, tmp_path, redis_url, key_prefix, secret_key):
    """A copy of the cluster's collection on one node (a laptop, a staging box): the node holds every shard."""
    first = qdrant_cluster.peers[0]
    register_storage(client, "local", engine_config)
    before = data.scroll_all(first.url, first.api_key, set_docs)
    done = run_job(client, jobs, worker, type="backup", collection_name=set_docs, timeout=SET_TIMEOUT)
    worker.stop()  # the restore must be run by a worker of the single node

    (tmp_path / "single-qbm").mkdir()
    single_config = make_engine_config(redis_url, key_prefix, qdrant_node.url, tmp_path / "single-qbm", secret_key,
                                       qdrant_api_key=qdrant_node.api_key)
    env = worker_env_for(single_config)
    env["QBM_STORAGE_ROOTS"] = ":".join(str(p) for p in engine_config.storage_roots)  # the same backups
    single = WorkerProcess(env, tmp_path / "single-worker.log").start()
    copy = f"{set_docs}-single"
    try:
        job = post_job(client, type="restore", collection_name=set_docs, snapshot_name=done["snapshot_name"],
                       metadata={"target_collection": copy})
        restored = wait_for_job(jobs, job["id"], worker=single, timeout=SET_TIMEOUT)
        assert restored["status"] == "completed", (restored, single.log()[-4000:])
        assert restored["metadata"]["restored_points"] == data.POINTS
        info = qdrant_node.result("GET", f"/collections/{copy}")
        assert info["config"]["params"]["shard_number"] == SHARDS
        assert data.differences(before, data.scroll_all(qdrant_node.url, qdrant_node.api_key, copy)) == []
        leftovers = qdrant_node.snapshots_path / copy
        assert not leftovers.exists() or not [p for p in leftovers.rglob("*") if p.is_file()]  # uploads removed
    finally:
        single.stop()
        data.drop_collection(qdrant_node, copy)


def test_a_set_restores_into_a_separate_two_peer_cluster(app, client, jobs, worker, qdrant_cluster, set_docs,
                                                          engine_config, qdrant_bin, tmp_path, redis_url,
                                                          key_prefix, secret_key):
    first = qdrant_cluster.peers[0]
    register_storage(client, "local", engine_config)
    before = data.scroll_all(first.url, first.api_key, set_docs)
    done = run_job(client, jobs, worker, type="backup", collection_name=set_docs, timeout=SET_TIMEOUT)
    worker.stop()  # the restore must be run by a worker of the other cluster

    other = QdrantCluster(qdrant_bin, tmp_path / "other", size=2).start()
    try:
        (tmp_path / "other-qbm").mkdir()
        other_config = cluster_engine_config(other, redis_url, key_prefix, tmp_path / "other-qbm", secret_key)
        env = worker_env_for(other_config)
        env["QBM_STORAGE_ROOTS"] = ":".join(str(p) for p in engine_config.storage_roots)  # the same backups
        other_worker = WorkerProcess(env, tmp_path / "other-worker.log").start()
        try:
            job = post_job(client, type="restore", collection_name=set_docs, snapshot_name=done["snapshot_name"],
                           metadata={"target_collection": f"{set_docs}-moved"})
            restored = wait_for_job(jobs, job["id"], worker=other_worker, timeout=SET_TIMEOUT)
            assert restored["status"] == "completed", (restored, other_worker.log()[-4000:])
        finally:
            other_worker.stop()
        moved = f"{set_docs}-moved"
        data.wait_replicas_active(other.peers, moved, timeout=120)
        assert placement(other.peers, moved) == {s: {p.peer_id() for p in other.peers} for s in range(SHARDS)}
        assert data.differences(before, data.scroll_all(other.peers[1].url, other.api_key, moved)) == []
    finally:
        other.remove()
