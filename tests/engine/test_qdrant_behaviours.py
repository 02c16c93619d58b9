"""What real Qdrant does that a naive client gets wrong, taught to the double (tests/qdrant_double/README.md
lists them) and handled by QBM: an approximate points_count in collection info, and a snapshot listed before
its checksum sidecar exists."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

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


def test_a_read_only_qdrant_key_fails_a_backup_at_once_with_a_sentence(client, jobs, qdrant, worker_env,
                                                                      start_worker, engine_config):
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=5)
    qdrant.api_key, qdrant.read_only_api_key = "full-key", "read-only-key"
    worker_env["QBM_QDRANT_API_KEY"] = "read-only-key"
    worker = start_worker()
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"], worker=worker)
    assert done["status"] == "failed"
    assert done["error"] == ("Qdrant does not allow this with QBM's API key (HTTP 403: Forbidden: Global manage "
                             "access is required); QBM_QDRANT_API_KEY needs full access (a read-only key can list "
                             "collections but not take or restore snapshots)")
    creates = [r for r in qdrant.requests_log if r.method == "POST" and r.path.endswith("/snapshots")]
    assert len(creates) == 1 and creates[0].headers["api-key"] == "read-only-key"  # refused once, not retried
    assert "Traceback" not in worker.log() and "step failed unexpectedly" not in worker.log()


def test_a_wrong_qdrant_key_fails_a_backup_with_a_sentence_naming_the_setting(client, jobs, qdrant, worker_env,
                                                                             start_worker, engine_config):
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=5)
    qdrant.api_key = "the-right-key"
    worker_env["QBM_QDRANT_API_KEY"] = "a-wrong-key"
    worker = start_worker()
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"], worker=worker)
    assert done["status"] == "failed"
    assert done["error"] == ("Qdrant refused QBM's API key (HTTP 401: Invalid API key or JWT); check "
                             "QBM_QDRANT_API_KEY")
    assert "a-wrong-key" not in worker.log()


def test_a_rate_limited_create_is_retried_no_sooner_than_qdrant_asked(client, jobs, qdrant, worker, engine_config):
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=5)
    qdrant.faults.fail_next(1, status=429, path_contains="/collections/docs/snapshots", retry_after=4)
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"], worker=worker)
    assert done["status"] == "completed", done["error"]
    assert done["metadata"]["attempt"] == 2 and "(HTTP 429)" in done["metadata"]["last_error"]
    creates = [r for r in qdrant.requests_log if r.method == "POST" and r.path == "/collections/docs/snapshots"]
    assert len(creates) == 2 and creates[1].at - creates[0].at >= 4.0  # Retry-After: 4 beats the 2 s backoff


def test_after_a_crash_in_create_a_snapshot_without_creation_time_is_adopted_by_its_name(qdrant, engine_config):
    """Qdrant's creation_time may be null; the time in the snapshot's name still tells that Qdrant finished the
    snapshot a crashed create step asked for, so the retry adopts it instead of making a second one."""
    qdrant.create_collection("docs", points=10)
    qdrant.clock = lambda: datetime(2026, 12, 1, 21, 40, 5, tzinfo=UTC)
    qdrant.store.null_creation_time = True
    made = requests.post(f"{qdrant.url}/collections/docs/snapshots", params={"wait": "true"}, timeout=30).json()
    assert made["result"]["creation_time"] is None
    ctx = Context(engine_config)
    job = Job(id="j1", type=JobType.BACKUP, status=JobStatus.RUNNING, collection_name="docs", created_at="")
    adopted = backup._adopt(ctx, job, started_at="2026-12-01T21:40:04Z")
    assert adopted is not None and adopted["name"] == made["result"]["name"]
    assert backup._adopt(ctx, job, started_at="2026-12-01T21:41:00Z") is None  # made before this attempt: not ours
