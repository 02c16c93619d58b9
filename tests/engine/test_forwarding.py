"""What restores forward to Qdrant, read from the double's full request log: the manifest's sha256 as
``checksum`` and a ``priority`` on every recovery call, upload or URL, collection or shard; and a backup whose
bytes were damaged in storage fails its restore with a sentence saying so and leaves the target as it was."""

from __future__ import annotations

import pytest

from shared.domain.manifest import read_manifest
from tests.engine.conftest import wait_for_job
from tests.engine.test_roundtrip import post_job, register_storage, storage_backend


def _backup(app, client, jobs, worker, storage, **extra) -> tuple[dict, object]:
    made = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs", **extra)["id"], worker=worker)
    assert made["status"] == "completed", made["error"]
    manifest = read_manifest(storage_backend(app, storage["id"]), "docs", made["snapshot_name"])
    return made, manifest


def _recovery_calls(qdrant) -> list:
    return [r for r in qdrant.requests_log if r.method in ("PUT", "POST")
            and (r.path.endswith("/snapshots/recover") or r.path.endswith("/snapshots/upload"))]


@pytest.mark.parametrize("priority", [None, "replica"])
def test_local_restore_uploads_with_the_manifests_checksum_and_a_priority(app, client, jobs, qdrant, worker,
                                                                          engine_config, priority):
    storage = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=30)
    made, manifest = _backup(app, client, jobs, worker, storage)
    metadata = {"target_collection": "copy"} | ({"priority": priority} if priority else {})
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="docs",
                                           snapshot_name=made["snapshot_name"], metadata=metadata)["id"],
                            worker=worker)
    assert restored["status"] == "completed", restored["error"]
    [upload] = _recovery_calls(qdrant)
    assert upload.path == "/collections/copy/snapshots/upload"
    assert upload.query["checksum"] == manifest.sha256
    assert upload.query["priority"] == (priority or "snapshot")
    assert upload.filename == f"qbm-restore-{restored['id']}.snapshot"


def test_s3_restore_has_qdrant_pull_with_the_checksum(app, client, jobs, qdrant, worker, engine_config,
                                                      s3_server, s3_bucket):
    storage = register_storage(client, "s3", engine_config, s3_server, s3_bucket)
    qdrant.create_collection("docs", points=30)
    made, manifest = _backup(app, client, jobs, worker, storage)
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="docs",
                                           snapshot_name=made["snapshot_name"],
                                           metadata={"target_collection": "copy"})["id"], worker=worker)
    assert restored["status"] == "completed", restored["error"]
    [recover] = _recovery_calls(qdrant)
    assert recover.path == "/collections/copy/snapshots/recover"
    assert recover.json["checksum"] == manifest.sha256 and recover.json["priority"] == "snapshot"
    assert recover.json["location"].startswith(s3_server.endpoint) and "X-Amz-Signature" in recover.json["location"]


def test_shard_restore_uploads_to_the_shard_with_the_checksum(app, client, jobs, qdrant, worker, engine_config):
    storage = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=30, shard_number=2)
    made = wait_for_job(jobs, post_job(client, type="shard_backup", collection_name="docs", shard_id=1)["id"],
                        worker=worker)
    assert made["status"] == "completed", made["error"]
    manifest = read_manifest(storage_backend(app, storage["id"]), "docs", made["snapshot_name"])
    restored = wait_for_job(jobs, post_job(client, type="shard_restore", collection_name="docs", shard_id=1,
                                           snapshot_name=made["snapshot_name"])["id"], worker=worker)
    assert restored["status"] == "completed", restored["error"]
    [upload] = _recovery_calls(qdrant)
    assert upload.path == "/collections/docs/shards/1/snapshots/upload"
    assert (upload.query["checksum"], upload.query["priority"]) == (manifest.sha256, "snapshot")


def test_a_backup_damaged_in_storage_fails_its_restore_and_leaves_the_target_alone(app, client, jobs, qdrant,
                                                                                   worker, engine_config):
    storage = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=30, size_bytes=200_000)
    made, manifest = _backup(app, client, jobs, worker, storage)
    path = engine_config.storage_roots[0] / "backups" / manifest.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the segment data: same size, tar still readable
    path.write_bytes(bytes(data))
    qdrant.drop_collection("docs")
    qdrant.create_collection("docs", points=7)  # what the user has now, and must keep
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="docs",
                                           snapshot_name=made["snapshot_name"], metadata={"replace": True},
                                           )["id"], worker=worker)
    assert restored["status"] == "failed"
    assert "checksum mismatch" in restored["error"].lower() and made["snapshot_name"] in restored["error"]
    assert qdrant.points_count("docs") == 7
