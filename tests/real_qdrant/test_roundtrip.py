"""Backup -> restore round trips against a real single-node Qdrant, through QBM's API and a real ``qbm worker``:
every point's id, vector and payload come back, and so does the payload index."""

from __future__ import annotations

import io

import pytest

from tests.engine.conftest import wait_until
from tests.real_qdrant import data
from tests.real_qdrant.helpers import (
    listed_backups,
    register_storage,
    run_job,
    sha256_of,
    storage_backend,
    stored_manifest,
)

pytestmark = pytest.mark.real_qdrant


def snapshots_on(node, collection: str, shard_id: int | None = None) -> list[str]:
    scope = f"/collections/{collection}" + (f"/shards/{shard_id}" if shard_id is not None else "")
    return [s["name"] for s in node.result("GET", f"{scope}/snapshots")]


def payload_schema(node, collection: str) -> dict:
    return node.result("GET", f"/collections/{collection}")["payload_schema"]


def test_collection_backup_to_local_storage_and_restore(app, client, jobs, worker, qdrant_node, docs,
                                                         engine_config):
    storage = register_storage(client, "local", engine_config)
    before = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)
    assert len(before) == data.POINTS
    # What Qdrant keeps is the vector normalised (Cosine), so restores are compared with what it gave back.
    original = data.make_points()[123]["vector"]
    assert not data.differences({123: (data.normalised(original), {})}, {123: (before[123][0], {})})
    index_before = payload_schema(qdrant_node, docs)
    assert index_before[data.INDEXED_FIELD]["data_type"] == "integer"

    done = run_job(client, jobs, worker, type="backup", collection_name=docs)
    backup_id = done["snapshot_name"]
    manifest = stored_manifest(app, storage["id"], docs, backup_id)
    assert manifest["points_count"] == data.POINTS
    assert manifest["qdrant_version"] == qdrant_node.get("/")["version"]
    assert sha256_of(storage_backend(app, storage["id"]), manifest["key"]) == manifest["sha256"]
    assert snapshots_on(qdrant_node, docs) == []  # freed on the node once copied
    assert [b["backup_id"] for b in listed_backups(client, storage["id"], docs)] == [backup_id]

    data.drop_collection(qdrant_node, docs)
    done = run_job(client, jobs, worker, type="restore", collection_name=docs, snapshot_name=backup_id)
    assert done["metadata"]["restored_points"] == data.POINTS

    assert data.exact_count(qdrant_node, docs) == data.POINTS
    assert data.differences(before, data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)) == []
    index_after = payload_schema(qdrant_node, docs)
    assert index_after[data.INDEXED_FIELD]["data_type"] == "integer"
    assert index_after[data.INDEXED_FIELD].get("points") == data.POINTS
    assert snapshots_on(qdrant_node, docs) == []  # the uploaded copy is not left on the node


@pytest.mark.parametrize("upload", [False, True], ids=["qdrant-pulls-presigned-url", "worker-uploads"])
def test_collection_backup_to_s3_and_restore(app, client, jobs, worker, qdrant_node, docs, engine_config,
                                             s3_server, s3_bucket, upload):
    storage = register_storage(client, "s3", engine_config, s3_server, s3_bucket)
    before = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)

    done = run_job(client, jobs, worker, type="backup", collection_name=docs)
    backup_id = done["snapshot_name"]
    manifest = stored_manifest(app, storage["id"], docs, backup_id)
    assert manifest["points_count"] == data.POINTS
    stat = s3_server.minio().stat_object(s3_bucket, manifest["key"])
    assert stat.size == manifest["size"] == done["metadata"]["size"]

    data.drop_collection(qdrant_node, docs)
    metadata = {"upload": True} if upload else {}
    done = run_job(client, jobs, worker, type="restore", collection_name=docs, snapshot_name=backup_id,
                   metadata=metadata)
    assert done["metadata"]["restored_points"] == data.POINTS
    assert data.differences(before, data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)) == []
    assert payload_schema(qdrant_node, docs)[data.INDEXED_FIELD]["data_type"] == "integer"
    assert snapshots_on(qdrant_node, docs) == []

    # The checksum QBM hands Qdrant with the snapshot is checked by Qdrant: a damaged copy (same size, one byte
    # changed) is refused and the collection stays as it was.
    minio = s3_server.minio()
    damaged = bytearray(minio.get_object(s3_bucket, manifest["key"]).read())
    damaged[len(damaged) // 2] ^= 0xFF
    minio.put_object(s3_bucket, manifest["key"], io.BytesIO(bytes(damaged)), len(damaged))
    failed = run_job(client, jobs, worker, expect="failed", type="restore", collection_name=docs,
                     snapshot_name=backup_id, metadata={**metadata, "replace": True})
    assert "checksum mismatch" in failed["error"].lower() and manifest["sha256"] in failed["error"]
    assert data.exact_count(qdrant_node, docs) == data.POINTS
    assert snapshots_on(qdrant_node, docs) == []


def test_restore_under_a_new_name_next_to_the_original(app, client, jobs, worker, qdrant_node, docs,
                                                        engine_config):
    register_storage(client, "local", engine_config)
    before = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)
    backup_id = run_job(client, jobs, worker, type="backup", collection_name=docs)["snapshot_name"]

    copy = f"{docs}-copy"
    done = run_job(client, jobs, worker, type="restore", collection_name=docs, snapshot_name=backup_id,
                   metadata={"target_collection": copy})
    assert done["metadata"]["target_collection"] == copy
    assert data.differences(before, data.scroll_all(qdrant_node.url, qdrant_node.api_key, copy)) == []
    assert data.differences(before, data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)) == []
    info = qdrant_node.result("GET", f"/collections/{copy}")
    assert info["config"]["params"]["shard_number"] == 3
    assert info["payload_schema"][data.INDEXED_FIELD]["data_type"] == "integer"
    assert snapshots_on(qdrant_node, copy) == [] and snapshots_on(qdrant_node, docs) == []


def shard_points(node, collection: str) -> dict[int, int]:
    return {s["shard_id"]: s["points_count"] for s in node.result("GET", f"/collections/{collection}/cluster")
            ["local_shards"]}


def test_shard_backup_and_restore_into_a_fresh_collection(app, client, jobs, worker, qdrant_node, docs,
                                                           engine_config):
    storage = register_storage(client, "local", engine_config)
    before = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)
    counts = shard_points(qdrant_node, docs)
    assert sum(counts.values()) == data.POINTS and all(counts.values())

    done = run_job(client, jobs, worker, type="shard_backup", collection_name=docs, shard_id=1)
    backup_id = done["snapshot_name"]
    manifest = stored_manifest(app, storage["id"], docs, backup_id)
    assert manifest["shard_id"] == 1 and manifest["points_count"] == counts[1]
    assert snapshots_on(qdrant_node, docs, shard_id=1) == []

    target = f"{docs}-new"
    data.create_collection(qdrant_node, target, shard_number=3, points=0, index=False)
    done = run_job(client, jobs, worker, type="shard_restore", collection_name=docs, shard_id=1,
                   snapshot_name=backup_id, metadata={"target_collection": target})
    assert done["metadata"]["restored_points"] == counts[1]

    assert shard_points(qdrant_node, target) == {0: 0, 1: counts[1], 2: 0}
    restored = data.scroll_all(qdrant_node.url, qdrant_node.api_key, target)
    assert len(restored) == counts[1] == data.exact_count(qdrant_node, target)
    assert data.differences({pid: before[pid] for pid in restored}, restored) == []
    assert snapshots_on(qdrant_node, target, shard_id=1) == []


def test_shard_restore_in_place_after_its_points_were_deleted(app, client, jobs, worker, qdrant_node, docs,
                                                               engine_config):
    register_storage(client, "local", engine_config)
    before = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)
    counts = shard_points(qdrant_node, docs)
    backup_id = run_job(client, jobs, worker, type="shard_backup", collection_name=docs,
                        shard_id=2)["snapshot_name"]

    # Every point with an even id goes: each shard loses about half of its points.
    qdrant_node.request("POST", f"/collections/{docs}/points/delete?wait=true",
                        json={"points": list(range(0, data.POINTS, 2))})
    assert data.exact_count(qdrant_node, docs) == data.POINTS // 2

    done = run_job(client, jobs, worker, type="shard_restore", collection_name=docs, shard_id=2,
                   snapshot_name=backup_id)
    assert done["metadata"]["restored_points"] == counts[2]
    after = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)
    odd = [pid for pid in before if pid % 2]
    in_shard_2 = sorted(set(after) - set(odd))  # the even ids that came back: shard 2's
    assert len(after) == data.exact_count(qdrant_node, docs) == len(odd) + len(in_shard_2)
    assert 0 < len(in_shard_2) < counts[2]
    assert data.differences({pid: before[pid] for pid in after}, after) == []


def test_snapshot_created_with_wait_false_appears_in_the_listing(client, qdrant_node, docs):
    resp = client.post(f"/api/v1/collections/{docs}/snapshots?wait=false")
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["result"] is None

    def listed() -> list[dict]:
        return client.get(f"/api/v1/collections/{docs}/snapshots").get_json()["result"]

    wait_until(lambda: any(s["checksum"] for s in listed()), timeout=60,
               what="the snapshot made with wait=false to be listed with its checksum")
    [snapshot] = listed()
    assert snapshot["name"].startswith(f"{docs}-") and snapshot["size"] > 0
    assert snapshot["creation_time"].endswith("Z")
    assert [s["name"] for s in qdrant_node.result("GET", f"/collections/{docs}/snapshots")] == [snapshot["name"]]

    resp = client.delete(f"/api/v1/collections/{docs}/snapshots/{snapshot['name']}")
    assert resp.status_code == 200 and resp.get_json()["result"] is True
    assert qdrant_node.result("GET", f"/collections/{docs}/snapshots") == []


def test_restore_over_a_changed_collection_brings_back_the_backed_up_points(app, client, jobs, worker, qdrant_node,
                                                                             docs, engine_config):
    register_storage(client, "local", engine_config)
    before = data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)
    backup_id = run_job(client, jobs, worker, type="backup", collection_name=docs)["snapshot_name"]

    # After the backup: a third of the points deleted, a thousand new ones, payloads changed.
    qdrant_node.request("POST", f"/collections/{docs}/points/delete?wait=true",
                        json={"points": list(range(0, data.POINTS, 3))})
    extra = [dict(p, id=data.POINTS + p["id"]) for p in data.make_points()[:1000]]
    data.upload(qdrant_node, docs, extra)
    qdrant_node.request("POST", f"/collections/{docs}/points/payload?wait=true",
                        json={"payload": {"text": "changed"}, "points": [1, 2, 4, 5]})
    assert data.exact_count(qdrant_node, docs) != data.POINTS

    done = run_job(client, jobs, worker, type="restore", collection_name=docs, snapshot_name=backup_id,
                   metadata={"replace": True})
    assert done["metadata"]["restored_points"] == data.POINTS
    assert data.differences(before, data.scroll_all(qdrant_node.url, qdrant_node.api_key, docs)) == []
