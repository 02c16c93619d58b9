"""Cancel, retry, checksum mismatch, worker crash, and one backup per collection at a time."""

from __future__ import annotations

import json

from shared.domain.manifest import manifest_key
from tests.engine.conftest import wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend
from tests.files import files_under

MiB = 1024 * 1024


def test_cancel_running_backup_stops_and_cleans_up(client, jobs, qdrant, worker, engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    root = engine_config.storage_roots[0] / "backups"
    qdrant.create_collection("big", points=50, size_bytes=24 * MiB)
    qdrant.faults.throttle(2 * MiB)  # ~12 s for the whole download

    job = post_job(client, type="backup", collection_name="big")
    wait_until(lambda: jobs.get(job["id"]).progress > 12, timeout=30, what="transfer under way")
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.get_json()["result"]["status"] == "cancelled"

    # Within seconds: no partial file in storage, the snapshot made for the job is gone from Qdrant.
    wait_until(lambda: files_under(root) == [] and qdrant.snapshot_files("big") == [], timeout=3,
               what="partial upload and Qdrant snapshot removed")
    assert jobs.get(job["id"]).status == "cancelled"


def test_cancel_pending_job_never_starts(client, jobs, qdrant, start_worker, engine_config, redis_client):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=10)
    job = post_job(client, type="backup", collection_name="docs")
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    # Only now does a worker appear: it must drop the message without touching Qdrant.
    queued = f"{engine_config.key_prefix}dramatiq:backups.msgs"
    assert redis_client.hlen(queued) == 1
    start_worker()
    wait_until(lambda: redis_client.hlen(queued) == 0, timeout=30, what="the message to be consumed")
    done = jobs.get(job["id"]).to_dict()
    assert done["status"] == "cancelled" and done["started_at"] is None
    assert not any(method == "POST" and "snapshots" in path for method, path in qdrant.requests_seen)


def test_checksum_mismatch_fails_without_manifest_then_retry_completes(app, client, jobs, qdrant, worker,  # noqa: ANN001
                                                                       engine_config):
    storage_cfg = register_storage(client, "local", engine_config)
    root = engine_config.storage_roots[0] / "backups"
    qdrant.create_collection("docs", points=77, size_bytes=1 * MiB)
    qdrant.faults.corrupt_downloads(True)

    job = post_job(client, type="backup", collection_name="docs")
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "failed"
    assert "checksum mismatch" in done["error"]
    assert files_under(root) == []  # no manifest, no snapshot file: nothing that looks like a backup

    qdrant.faults.reset()
    response = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert response.status_code == 200 and response.get_json()["result"]["status"] == "pending"
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "completed", done
    storage = storage_backend(app, storage_cfg["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("docs", done["snapshot_name"])))
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"]


def test_transient_qdrant_errors_are_retried(client, jobs, qdrant, worker, engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=5)
    qdrant.faults.fail_next(2, status=503, path_contains="/snapshots")
    job = post_job(client, type="backup", collection_name="docs")
    done = wait_for_job(jobs, job["id"], worker=worker, timeout=60)
    assert done["status"] == "completed", done
    # The create failed once (the second 503, on a listing, is absorbed by the client's own GET retries): the
    # step's retry was visible on the job, and it was one WARNING line with no traceback.
    assert done["metadata"]["attempt"] == 2 and "HTTP 503" in done["metadata"]["last_error"]
    retries = [line for line in worker.log().splitlines() if "will retry" in line]
    assert len(retries) == 1 and '"level": "WARNING"' in retries[0] and "attempt 2 of 7 next" in retries[0]
    assert "Traceback" not in worker.log()


def test_a_retrying_job_shows_its_attempt_and_last_error_while_it_waits(client, jobs, qdrant, worker,  # noqa: ANN001
                                                                         engine_config):
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=5)
    qdrant.faults.fail_next(1, status=503, path_contains="/snapshots")
    job = post_job(client, type="backup", collection_name="docs")
    wait_until(lambda: jobs.get(job["id"]).metadata.get("attempt") == 2, timeout=30, what="the first retry")
    during = jobs.get(job["id"])
    assert during.status in ("running", "completed")
    assert during.metadata["last_error"].startswith("Qdrant: ") and "(HTTP 503)" in during.metadata["last_error"]
    assert wait_for_job(jobs, job["id"], worker=worker)["status"] == "completed"


def test_worker_killed_mid_transfer_job_resumes_on_another(app, client, jobs, qdrant, start_worker,  # noqa: ANN001
                                                           engine_config):
    storage_cfg = register_storage(client, "local", engine_config)
    root = engine_config.storage_roots[0] / "backups"
    qdrant.create_collection("big", points=99, size_bytes=16 * MiB)
    qdrant.faults.throttle(2 * MiB)

    first = start_worker()
    job = post_job(client, type="backup", collection_name="big", metadata={"keep_on_qdrant": True})
    wait_until(lambda: jobs.get(job["id"]).progress > 20, timeout=30, what="transfer under way")
    first.kill()
    qdrant.faults.throttle(None)

    second = start_worker()
    done = wait_for_job(jobs, job["id"], timeout=120, worker=second)
    assert done["status"] == "completed", done

    storage = storage_backend(app, storage_cfg["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("big", done["snapshot_name"])))
    listed = {s["name"]: s["checksum"] for s in client.get("/api/v1/collections/big/snapshots").get_json()["result"]}
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == listed[manifest["qdrant_snapshot_name"]]
    # Exactly one backup, no leftover temp file from the killed attempt, one snapshot on Qdrant.
    assert sorted(p.name for p in files_under(root)) == ["collection.snapshot", "manifest.json"]
    assert len([p for p in qdrant.snapshot_files("big") if p.suffix == ".snapshot"]) == 1


def test_one_backup_per_collection_at_a_time(app, client, jobs, qdrant, worker, engine_config):  # noqa: ANN001
    storage_cfg = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=12, size_bytes=4 * MiB)
    qdrant.faults.throttle(8 * MiB)
    first = post_job(client, type="backup", collection_name="docs")
    second = post_job(client, type="backup", collection_name="docs")
    done = [wait_for_job(jobs, j["id"], worker=worker, timeout=90) for j in (first, second)]
    assert [d["status"] for d in done] == ["completed", "completed"]
    # The second never ran while the first did.
    a, b = sorted(done, key=lambda d: d["started_at"])
    assert a["completed_at"] <= b["started_at"]
    storage = storage_backend(app, storage_cfg["id"])
    for d in done:
        manifest = json.loads(storage.read_bytes(manifest_key("docs", d["snapshot_name"])))
        assert sha256_of(storage, manifest["key"]) == manifest["sha256"]
