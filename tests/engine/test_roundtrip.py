"""Backup -> restore round trips through the API and a real worker, for every job type and both backends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from shared.adapters.storage import from_config
from shared.domain.manifest import manifest_key
from tests.engine.conftest import wait_for_job

MiB = 1024 * 1024


def register_storage(client, kind: str, engine_config, s3_server=None, bucket: str | None = None) -> dict:  # noqa: ANN001
    if kind == "local":
        body = {"name": "disk", "type": "local", "path": str(engine_config.storage_roots[0] / "backups"),
                "is_default": True}
    else:
        body = {"name": "s3", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": bucket,
                "s3_region": s3_server.region, "s3_access_key": s3_server.access_key,
                "s3_secret_key": s3_server.secret_key, "is_default": True}
    response = client.post("/api/v1/storage", json=body)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()["result"]


def storage_backend(app, storage_id: str):  # noqa: ANN001, ANN201
    ext = app.extensions["qbm"]
    cfg = ext.storage_configs.get(storage_id, with_secret=True)
    return from_config(cfg, allowed_roots=ext.config.storage_roots)


def post_job(client, **body) -> dict:  # noqa: ANN001
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["result"]


def app_enqueue(client, job_id: str) -> None:  # noqa: ANN001
    """Hand a job stored directly in the job store to the workers, through the app's own enqueuer."""
    client.application.extensions["qbm"].enqueue(job_id)


def sha256_of(storage, key: str) -> str:  # noqa: ANN001
    digest = hashlib.sha256()
    with storage.open(key) as reader:
        while chunk := reader.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def backend_kind(request, client, engine_config):  # noqa: ANN001, ANN201
    kind = request.param
    if kind == "local":
        return register_storage(client, "local", engine_config)
    s3_server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return register_storage(client, "s3", engine_config, s3_server, bucket)


@pytest.mark.parametrize("backend_kind", ["local", "s3"], indirect=True)
def test_collection_backup_and_restore_round_trip(app, client, jobs, qdrant, worker, backend_kind):  # noqa: ANN001
    storage_cfg = backend_kind
    qdrant.create_collection("docs", points=321, size_bytes=3 * MiB, shard_number=2)
    listed_checksum = {}

    job = post_job(client, type="backup", collection_name="docs", metadata={"keep_on_qdrant": True})
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["started_at"] and done["completed_at"] and done["error"] is None
    backup_id = done["snapshot_name"]
    meta = done["metadata"]
    assert meta["storage_id"] == storage_cfg["id"]

    # The stored bytes hash to what the manifest, the job and Qdrant's own checksum say.
    storage = storage_backend(app, storage_cfg["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("docs", backup_id)))
    for snap in client.get("/api/v1/collections/docs/snapshots").get_json()["result"]:
        listed_checksum[snap["name"]] = snap["checksum"]
    assert manifest["qdrant_snapshot_name"] in listed_checksum
    actual = sha256_of(storage, manifest["key"])
    assert actual == manifest["sha256"] == meta["sha256"] == listed_checksum[manifest["qdrant_snapshot_name"]]
    assert manifest["size"] == meta["size"] == storage.stat(manifest["key"]).size
    assert meta["bytes_done"] == meta["bytes_total"] == manifest["size"]  # what the progress bar shows
    assert manifest["points_count"] == 321 and manifest["collection"] == "docs"
    assert manifest["qdrant_version"] and manifest["qbm_version"] and manifest["job_id"] == job["id"]

    # Lose the collection, restore it from the backup.
    qdrant.drop_collection("docs")
    restore = post_job(client, type="restore", collection_name="docs", snapshot_name=backup_id)
    done = wait_for_job(jobs, restore["id"], worker=worker)
    assert done["status"] == "completed", done
    assert qdrant.points_count("docs") == 321

    # And under another name, next to the original.
    copy = post_job(client, type="restore", collection_name="docs", snapshot_name=backup_id,
                    metadata={"target_collection": "docs-copy", "priority": "snapshot"})
    done = wait_for_job(jobs, copy["id"], worker=worker)
    assert done["status"] == "completed", done
    assert qdrant.points_count("docs-copy") == 321
    # Restores leave no uploaded snapshot file behind on the node.
    assert qdrant.snapshot_files("docs-copy") == []


@pytest.mark.parametrize("backend_kind", ["local", "s3"], indirect=True)
def test_shard_backup_and_restore_round_trip(app, client, jobs, qdrant, worker, backend_kind):  # noqa: ANN001
    qdrant.create_collection("split", points=400, size_bytes=2 * MiB, shard_number=2)
    shard_points = {s["shard_id"]: s["points_count"]
                    for s in client.get("/api/v1/collections/split/cluster").get_json()["result"]["local_shards"]}

    job = post_job(client, type="shard_backup", collection_name="split", shard_id=1)
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "completed", done
    backup_id = done["snapshot_name"]
    storage = storage_backend(app, backend_kind["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("split", backup_id)))
    assert manifest["shard_id"] == 1 and manifest["key"].endswith("/shard-1.snapshot")
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == done["metadata"]["sha256"]
    assert manifest["points_count"] == shard_points[1]
    # Not kept on Qdrant unless asked.
    assert qdrant.snapshot_files("split", shard_id=1) == []

    # Restore the shard into a fresh collection with the same shard layout.
    qdrant.create_collection("split-new", points=0, size_bytes=0, shard_number=2)
    restore = post_job(client, type="shard_restore", collection_name="split", shard_id=1,
                       snapshot_name=backup_id, metadata={"target_collection": "split-new"})
    done = wait_for_job(jobs, restore["id"], worker=worker)
    assert done["status"] == "completed", done
    restored = {s["shard_id"]: s["points_count"]
                for s in client.get("/api/v1/collections/split-new/cluster").get_json()["result"]["local_shards"]}
    assert restored[1] == shard_points[1]
    assert restored[0] == 0


def test_a_restore_replaces_an_existing_collection_only_when_asked(client, jobs, qdrant, worker, engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=50)
    backup_id = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"],
                             worker=worker)["snapshot_name"]
    qdrant.drop_collection("docs")
    qdrant.create_collection("docs", points=9)  # what the user has now
    body = {"type": "restore", "collection_name": "docs", "snapshot_name": backup_id}
    refused = client.post("/api/v1/jobs", json=body)
    assert refused.status_code == 409
    sentence = refused.get_json()["status"]["error"].removeprefix("metadata.replace: ")
    # A job that got past the check (the collection was made after submission) fails with the same sentence in
    # its first step, before Qdrant is asked to recover anything.
    job = jobs.create("restore", "docs", snapshot_name=backup_id,
                      metadata={"storage_id": default_storage_id(client)})
    app_enqueue(client, job.id)
    done = wait_for_job(jobs, job.id, worker=worker)
    assert done["status"] == "failed" and done["error"] == sentence
    assert qdrant.points_count("docs") == 9
    assert not any(path.endswith(("/snapshots/upload", "/snapshots/recover")) for _, path in qdrant.requests_seen)

    replaced = wait_for_job(jobs, post_job(client, **body, metadata={"replace": True})["id"], worker=worker)
    assert replaced["status"] == "completed", replaced["error"]
    assert qdrant.points_count("docs") == 50


def default_storage_id(client) -> str:  # noqa: ANN001
    return client.get("/api/v1/storage").get_json()["result"][0]["id"]


def test_restore_of_unknown_backup_fails_with_reason(client, jobs, qdrant, worker, engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    refused = client.post("/api/v1/jobs", json={"type": "restore", "collection_name": "docs",
                                                "snapshot_name": "20260101T000000Z-deadbeef"})
    assert refused.status_code == 404  # checked at submission, with the sentence the job would fail with
    sentence = refused.get_json()["status"]["error"].removeprefix("snapshot_name: ")
    # A job that got past the check (the backup vanished after submission) fails with the same sentence.
    job = jobs.create("restore", "docs", snapshot_name="20260101T000000Z-deadbeef",
                      metadata={"storage_id": storage["id"]})
    app_enqueue(client, job.id)
    done = wait_for_job(jobs, job.id, worker=worker)
    assert done["status"] == "failed" and done["error"] == sentence
    assert "20260101T000000Z-deadbeef" in sentence and "not found" in sentence


def test_backup_of_missing_collection_fails_at_once(client, jobs, qdrant, worker, engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    refused = client.post("/api/v1/jobs", json={"type": "backup", "collection_name": "nope"})
    assert refused.status_code == 404
    sentence = refused.get_json()["status"]["error"].removeprefix("collection_name: ")
    job = jobs.create("backup", "nope", metadata={"storage_id": storage["id"]})  # the collection went after the check
    app_enqueue(client, job.id)
    done = wait_for_job(jobs, job.id, worker=worker, timeout=20)
    assert done["status"] == "failed" and done["error"] == sentence
    assert "attempt" not in done["metadata"] and "will retry" not in worker.log()  # at once: no retry
    root: Path = engine_config.storage_roots[0] / "backups"
    assert not any(p.is_file() for p in root.rglob("*")) if root.exists() else True
