"""What real Qdrant does that a naive client gets wrong, taught to the double (tests/qdrant_double/README.md
lists them) and handled by QBM: an approximate points_count in collection info, and a snapshot listed before
its checksum sidecar exists."""

from __future__ import annotations

import threading

import requests

from shared.adapters.qdrant import QdrantClient
from shared.domain.manifest import read_manifest
from shared.records.job import Job, JobStatus, JobType
from tests.engine.conftest import wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage, storage_backend
from workers import backup
from workers.context import Context


def test_backup_and_restore_compare_exact_counts_not_the_estimate(app, client, jobs, qdrant, worker, engine_config):
    storage = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=240)
    qdrant.store.count_drift["docs"] = 17  # collection info says 257, as an unoptimised real collection may
    made = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"], worker=worker)
    assert made["status"] == "completed", made["error"]
    manifest = read_manifest(storage_backend(app, storage["id"]), "docs", made["snapshot_name"])
    assert manifest.points_count == 240

    qdrant.drop_collection("docs")
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="docs",
                                           snapshot_name=made["snapshot_name"])["id"], worker=worker)
    assert restored["status"] == "completed", restored["error"]
    assert restored["metadata"]["restored_points"] == 240
    qdrant.store.count_drift["docs"] = 17  # the restored collection's estimate is off again: still fine
    with QdrantClient(qdrant.url) as q:
        assert q.count_points("docs") == 240 and q.collection_info("docs")["points_count"] == 240 + 17


def test_a_snapshot_listed_before_its_checksum_is_waited_for(qdrant, engine_config):
    qdrant.create_collection("docs", points=10)
    qdrant.store.checksum_written.clear()  # hold every new snapshot between its rename and its sidecar
    created: list[dict] = []
    maker = threading.Thread(target=lambda: created.append(requests.post(
        f"{qdrant.url}/collections/docs/snapshots", params={"wait": "true"}, timeout=60).json()["result"]))
    maker.start()
    ctx = Context(engine_config)
    job = Job(id="j1", type=JobType.BACKUP, status=JobStatus.RUNNING, collection_name="docs", created_at="")
    listed = _wait_listed(ctx, job)
    assert "checksum" not in listed  # in flight: renamed into place, sidecar not written yet
    releaser = threading.Timer(0.5, qdrant.store.checksum_written.set)
    releaser.start()
    described = backup.wait_for_checksum(ctx, job, listed, timeout=30)
    maker.join(timeout=30)
    assert described["checksum"] == created[0]["checksum"] and len(described["checksum"]) == 64


def test_a_checksum_that_never_comes_is_not_waited_for_forever(qdrant, engine_config):
    qdrant.create_collection("docs", points=10)
    qdrant.store.checksum_written.clear()
    maker = threading.Thread(target=lambda: requests.post(f"{qdrant.url}/collections/docs/snapshots",
                                                          params={"wait": "true"}, timeout=60))
    maker.start()
    ctx = Context(engine_config)
    job = Job(id="j1", type=JobType.BACKUP, status=JobStatus.RUNNING, collection_name="docs", created_at="")
    listed = _wait_listed(ctx, job)
    assert backup.wait_for_checksum(ctx, job, listed, timeout=0.5) == listed  # like a Qdrant keeping snapshots in S3
    qdrant.store.checksum_written.set()
    maker.join(timeout=30)


def _wait_listed(ctx: Context, job: Job) -> dict:
    found: list[dict] = []
    wait_until(lambda: bool(found.extend(ctx.qdrant.list_snapshots("docs")) or found), timeout=30,
               what="the snapshot to be listed")
    return found[0]
