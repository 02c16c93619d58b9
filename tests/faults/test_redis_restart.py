"""Redis restarted while a backup is streaming: the worker and the scheduler reconnect by themselves, and the
job ends completed with a whole backup -- nothing stays ``running`` for ever.

A dedicated redis-server (AOF on, like compose's Redis) is stopped with SIGTERM, as ``systemctl restart redis``
would, and started again on the same port and data directory; the shared Redis of the other tests is never
touched. It stays down until the worker has noticed: the transfer step failed on a progress write, and
Dramatiq could not enqueue the step's retry (Redis was down) and dropped it -- the job's only message is lost,
so without the reaper the job would show ``running`` for ever. The scheduler leader's reaper finds it silent
for ``QBM_REAPER_GRACE_SECONDS`` with no message anywhere and re-enqueues it from its unfinished step.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from shared.adapters.redis_conn import connect
from shared.domain.manifest import manifest_key
from shared.records.job_store import JobStore
from tests.engine.conftest import SchedulerProcess, wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend
from tests.engine.test_scheduler import leader_pid
from tests.files import files_under

MiB = 1024 * 1024


def test_backup_survives_a_redis_restart_mid_transfer(own_redis, engine_config, worker_env, start_worker, qdrant,  # noqa: ANN001
                                                      tmp_path: Path):
    from api.app import create_app

    config = dataclasses.replace(engine_config, redis_url=own_redis.url)
    worker_env["QBM_REDIS_URL"] = own_redis.url
    app = create_app(config)
    client = app.test_client()
    probe = connect(own_redis.url)
    jobs = JobStore(probe, config.key_prefix)
    storage_cfg = register_storage(client, "local", config)
    root = config.storage_roots[0] / "backups"
    qdrant.create_collection("big", points=64, size_bytes=16 * MiB)
    qdrant.faults.throttle(2 * MiB)  # ~8 s of transfer
    worker = start_worker()
    scheduler = SchedulerProcess(dict(worker_env, QBM_SCHEDULER_LEASE_SECONDS="3"), tmp_path / "scheduler.log").start()
    try:
        wait_until(lambda: leader_pid(probe, config.key_prefix) == scheduler.pid, timeout=15,
                   what="the scheduler to lead")
        job = post_job(client, type="backup", collection_name="big", metadata={"keep_on_qdrant": True})
        wait_until(lambda: jobs.get(job["id"]).progress > 20, timeout=30, what="the transfer to be under way")

        own_redis.stop()
        wait_until(lambda: "Unexpected failure in after_process_message" in worker.log(), timeout=20,
                   what="the worker to fail the step and lose its retry (Redis is down)")
        own_redis.start()
        qdrant.faults.throttle(None)

        done = wait_for_job(jobs, job["id"], timeout=60, worker=worker)
        assert done["status"] == "completed", done
        assert f"reaper re-enqueued running job {job['id']} (1 of 3)" in scheduler.log(), scheduler.log()[-3000:]
        storage = storage_backend(app, storage_cfg["id"])
        manifest = json.loads(storage.read_bytes(manifest_key("big", done["snapshot_name"])))
        listed = {s["name"]: s["checksum"]
                  for s in client.get("/api/v1/collections/big/snapshots").get_json()["result"]}
        assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == listed[manifest["qdrant_snapshot_name"]]
        assert sorted(p.name for p in files_under(root)) == ["collection.snapshot", "manifest.json"]

        # Both processes lived through it (no restart) and are connected again: the scheduler leads, and the
        # worker takes new work.
        assert worker.proc.poll() is None and scheduler.proc.poll() is None
        wait_until(lambda: leader_pid(probe, config.key_prefix) == scheduler.pid, timeout=10,
                   what="the scheduler to lead again")
        qdrant.create_collection("after", points=5)
        after = wait_for_job(jobs, post_job(client, type="backup", collection_name="after")["id"], timeout=30,
                             worker=worker)
        assert after["status"] == "completed", after
        assert jobs.list(status="running") == ([], 0)
    finally:
        scheduler.stop()
