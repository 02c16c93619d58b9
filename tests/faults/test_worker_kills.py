"""A worker SIGKILLed in the middle of each kind of step: the job still ends completed after Dramatiq redelivers
its message to another worker, the stored bytes hash to what Qdrant had, and nothing is left behind -- no
incomplete multipart upload, no second object, no uploaded snapshot on the Qdrant node.

(Killing a worker mid-transfer to *local* storage is ``tests/engine/test_faults.py``.) Every kill lands on a
condition the test observes -- a multipart part in moto, a request held by the Qdrant double, bytes of an
upload read -- never on a sleep. Redelivery waits for the dead worker's Dramatiq heartbeat to age (15 s), so
each test takes about 20 s.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.domain.manifest import manifest_key
from tests.engine.conftest import wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend
from tests.faults.s3_checks import assert_one_whole_backup, multipart_uploads, part_uploaded, qdrant_checksums
from tests.files import files_under

MiB = 1024 * 1024


def test_worker_killed_mid_s3_upload_leaves_one_whole_backup(app, client, jobs, qdrant, start_worker,  # noqa: ANN001
                                                             engine_config, s3_server, s3_bucket, boto_s3):
    storage_cfg = register_storage(client, "s3", engine_config, s3_server, s3_bucket)
    # 40 MiB: more than two 16 MiB parts, so the upload is multipart and the kill lands between parts.
    qdrant.create_collection("big", points=99, size_bytes=40 * MiB)
    qdrant.faults.throttle(8 * MiB)
    first = start_worker()
    job = post_job(client, type="backup", collection_name="big")

    wait_until(lambda: part_uploaded(boto_s3, s3_bucket), timeout=30, what="a multipart upload with a part in S3")
    first.kill()
    assert jobs.get(job["id"]).status == "running"
    assert len(multipart_uploads(boto_s3, s3_bucket)) == 1  # what the crash leaves for the redelivery to clean
    source = qdrant_checksums(client)
    qdrant.faults.throttle(None)

    second = start_worker()
    done = wait_for_job(jobs, job["id"], timeout=90, worker=second)
    assert_one_whole_backup(app, boto_s3, s3_bucket, storage_cfg["id"], done, source)
    # The snapshot made for the backup is gone from Qdrant once the backup is complete.
    assert [p for p in qdrant.snapshot_files("big") if p.suffix == ".snapshot"] == []


def test_worker_killed_during_finalize_completes_once(app, client, jobs, qdrant, start_worker, engine_config):  # noqa: ANN001
    storage_cfg = register_storage(client, "local", engine_config)
    root: Path = engine_config.storage_roots[0] / "backups"
    qdrant.create_collection("big", points=42, size_bytes=4 * MiB)
    # finalize writes the manifest, then deletes the snapshot on Qdrant: hold that DELETE so the kill lands
    # inside finalize. Only the first DELETE is held; the redelivered finalize's goes through.
    qdrant.faults.stall_requests("/collections/big/snapshots/", 120, method="DELETE")
    first = start_worker()
    job = post_job(client, type="backup", collection_name="big")

    wait_until(lambda: any(m == "DELETE" for m, _ in qdrant.requests_seen), timeout=30,
               what="finalize to ask Qdrant to delete the snapshot")
    source = qdrant_checksums(client)
    first.kill()
    in_flight = jobs.get(job["id"])
    assert in_flight.status == "running"
    storage = storage_backend(app, storage_cfg["id"])
    # The manifest is written only after the data was checked, so what is there already is a whole backup.
    manifest = json.loads(storage.read_bytes(manifest_key("big", in_flight.snapshot_name)))
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == source[manifest["qdrant_snapshot_name"]]

    second = start_worker()
    done = wait_for_job(jobs, job["id"], timeout=60, worker=second)
    assert done["status"] == "completed", done
    assert done["metadata"]["sha256"] == manifest["sha256"]
    assert json.loads(storage.read_bytes(manifest_key("big", done["snapshot_name"]))) == manifest
    assert sorted(p.name for p in files_under(root)) == ["collection.snapshot", "manifest.json"]
    assert [p for p in qdrant.snapshot_files("big") if p.suffix == ".snapshot"] == []
    assert [m for m, _ in qdrant.requests_seen].count("DELETE") == 2  # once by each worker, nothing more


def test_worker_killed_mid_restore_upload_restores_once(app, client, jobs, qdrant, start_worker, engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=321, size_bytes=8 * MiB)
    first = start_worker()
    backup = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"], worker=first)
    assert backup["status"] == "completed", backup
    qdrant.drop_collection("docs")

    qdrant.faults.throttle_uploads(1 * MiB)  # the local backup is streamed into Qdrant's upload endpoint: ~8 s
    restore = post_job(client, type="restore", collection_name="docs", snapshot_name=backup["snapshot_name"])
    wait_until(lambda: jobs.get(restore["id"]).progress > 30, timeout=30, what="the upload to be under way")
    assert any(m == "POST" and p.endswith("/snapshots/upload") for m, p in qdrant.requests_seen)
    first.kill()
    qdrant.faults.throttle_uploads(None)
    assert not qdrant.collection_exists("docs")

    second = start_worker()
    done = wait_for_job(jobs, restore["id"], timeout=60, worker=second)
    assert done["status"] == "completed", done
    assert qdrant.points_count("docs") == 321 == done["metadata"]["restored_points"]
    # Once: the interrupted upload and the one the redelivered step made, and no other (only the completed one got
    # far enough for the double to read its file name).
    uploads = [r for r in qdrant.requests_log if r.method == "POST" and r.path.endswith("/snapshots/upload")]
    assert len(uploads) == 2 and uploads[1].filename == f"qbm-restore-{restore['id']}.snapshot"
    # Neither the interrupted upload nor the completed one is left on the node.
    assert qdrant.snapshot_files("docs") == []
    assert files_under(qdrant.snapshots_path / "tmp") == [] and files_under(qdrant.store.tmp_dir) == []
