"""What a misbehaving Qdrant node does to a backup: transient faults are retried and the backup completes whole;
damaged bytes fail the job at once, with nothing left in storage.

The worker runs with a 2 s ``QBM_QDRANT_READ_TIMEOUT`` (tests/faults/conftest.py): a download that stops sending
fails after 2 s instead of hanging the job (with no read timeout a stalled node would hold it for ever).
The corrupted download to *local* storage is ``tests/engine/test_faults.py``
(``test_checksum_mismatch_fails_without_manifest_then_retry_completes``); here it goes to S3, where the object
is complete before its hash can be compared, so it must be deleted again.
"""

from __future__ import annotations

import json
import time

import pytest

from shared.domain.manifest import manifest_key
from tests.engine.conftest import wait_for_job
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend
from tests.faults.s3_checks import multipart_uploads, object_keys
from tests.files import files_under

MiB = 1024 * 1024
STALL_SECONDS = 60


def inject(qdrant, fault: str) -> None:  # noqa: ANN001
    if fault == "503 on create":
        qdrant.faults.fail_next(1, status=503, path_contains="/collections/docs/snapshots")
    elif fault == "download cut":
        qdrant.faults.cut_after(256 * 1024)
    elif fault == "download stalled":
        qdrant.faults.stall(STALL_SECONDS, after_bytes=256 * 1024)


@pytest.mark.parametrize("fault", ["503 on create", "download cut", "download stalled"])
def test_transient_qdrant_fault_is_retried_and_the_backup_is_whole(fault, app, client, jobs, qdrant, worker,  # noqa: ANN001
                                                                   engine_config):
    storage_cfg = register_storage(client, "local", engine_config)
    root = engine_config.storage_roots[0] / "backups"
    qdrant.create_collection("docs", points=50, size_bytes=2 * MiB)
    inject(qdrant, fault)
    started = time.monotonic()
    job = post_job(client, type="backup", collection_name="docs", metadata={"keep_on_qdrant": True})
    done = wait_for_job(jobs, job["id"], timeout=45, worker=worker)
    assert done["status"] == "completed", done
    assert "step failed, will retry" in worker.log()  # the fault happened and was retried, not skipped

    storage = storage_backend(app, storage_cfg["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("docs", done["snapshot_name"])))
    listed = {s["name"]: s["checksum"] for s in client.get("/api/v1/collections/docs/snapshots").get_json()["result"]}
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == listed[manifest["qdrant_snapshot_name"]]
    # One backup: the failed attempt left no temp file, no second snapshot file on either side.
    assert sorted(p.name for p in files_under(root)) == ["collection.snapshot", "manifest.json"]
    assert len([p for p in qdrant.snapshot_files("docs") if p.suffix == ".snapshot"]) == 1
    creates = [p for m, p in qdrant.requests_seen if m == "POST" and p == "/collections/docs/snapshots"]
    assert len(creates) == (2 if fault == "503 on create" else 1)
    if fault == "download stalled":
        # Given up on after the read timeout, not after the node resumed sending.
        assert time.monotonic() - started < STALL_SECONDS / 2
        assert "timed out" in worker.log()


def test_corrupted_download_to_s3_fails_and_leaves_the_bucket_empty(client, jobs, qdrant, worker, engine_config,  # noqa: ANN001
                                                                     s3_server, s3_bucket, boto_s3):
    register_storage(client, "s3", engine_config, s3_server, s3_bucket)
    qdrant.create_collection("docs", points=50, size_bytes=20 * MiB)  # multipart: two parts
    qdrant.faults.corrupt_downloads(True)
    job = post_job(client, type="backup", collection_name="docs")
    done = wait_for_job(jobs, job["id"], timeout=45, worker=worker)
    assert done["status"] == "failed"
    assert "checksum mismatch" in done["error"] and "nothing was stored" in done["error"]
    assert "will retry" not in worker.log()  # damaged data is not a reason to try again
    assert object_keys(boto_s3, s3_bucket) == [] and multipart_uploads(boto_s3, s3_bucket) == []
    assert client.get("/api/v1/backups").get_json()["result"]["items"] == []
