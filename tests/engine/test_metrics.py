"""GET /metrics across one backup job run by a real `qbm worker`, and the worker's own Dramatiq metrics.

The worker is a separate process; what it counts (bytes, durations, active transfers) must still show up
at the API's /metrics, because it goes through Redis. Values are read the way Prometheus would read them:
the exposition text parsed by prometheus_client's parser.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from qbm.healthcheck import check
from shared.runtime.config import load_config
from shared.runtime.metrics_keys import scheduler_last_fire
from tests.engine.conftest import REPO, wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage

MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(client) -> dict[tuple[str, frozenset], float]:  # noqa: ANN001
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(metrics: dict, name: str, **labels: str) -> float:
    """A sample's value; a series that does not exist yet counts as 0, as in a PromQL sum."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_follow_one_backup_job(client, jobs, qdrant, start_worker, worker_env, engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=64, size_bytes=8 * MiB)
    qdrant.faults.throttle(3 * MiB)  # ~3 s of transfer: long enough to see it in flight

    before = scrape(client)
    assert value(before, "qbm_jobs", type="backup", status="completed") == 0
    assert value(before, "qbm_bytes_transferred_total", direction="backup", backend="local") == 0

    # Queued, no worker yet: the job is pending and its first step waits in the queue.
    job = post_job(client, type="backup", collection_name="docs")
    queued = scrape(client)
    assert value(queued, "qbm_jobs", type="backup", status="pending") == 1
    assert value(queued, "qbm_queue_depth", queue="backups") == 1
    assert value(queued, "qbm_queue_depth", queue="restores") == 0

    metrics_port = free_port()
    worker_env.update(QBM_WORKER_METRICS_PORT=str(metrics_port), QBM_WORKER_METRICS_HOST="127.0.0.1")
    worker = start_worker()

    # In flight: one active transfer, running job, bytes counted before the end (flushed about every second).
    def in_flight() -> bool:
        now = scrape(client)
        return (value(now, "qbm_active_transfers", direction="backup", backend="local") == 1
                and 0 < value(now, "qbm_bytes_transferred_total", direction="backup", backend="local") < 8 * MiB)

    wait_until(in_flight, timeout=30, what="an active transfer with bytes counted on /metrics")
    running = scrape(client)
    assert value(running, "qbm_jobs", type="backup", status="running") == 1
    assert value(running, "qbm_queue_depth", queue="backups") == 0

    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "completed", done
    after = scrape(client)
    assert value(after, "qbm_jobs", type="backup", status="completed") == 1
    assert value(after, "qbm_jobs", type="backup", status="running") == 0
    assert value(after, "qbm_active_transfers", direction="backup", backend="local") == 0
    # Exactly the snapshot's bytes, once.
    assert value(after, "qbm_bytes_transferred_total", direction="backup", backend="local") == done["metadata"]["size"]
    assert value(after, "qbm_job_duration_seconds_count", type="backup", status="completed") == 1
    assert 2 <= value(after, "qbm_job_duration_seconds_sum", type="backup", status="completed") < 60
    assert value(after, "qbm_job_duration_seconds_bucket", type="backup", status="completed", le="1.0") == 0
    assert value(after, "qbm_job_duration_seconds_bucket", type="backup", status="completed", le="+Inf") == 1

    # The worker's own Dramatiq metrics, from its exposition server (QBM_WORKER_METRICS_PORT).
    worker_metrics = parse(requests.get(f"http://127.0.0.1:{metrics_port}/", timeout=5).text)
    for step in ("create", "transfer", "finalize"):
        assert value(worker_metrics, "dramatiq_messages_total",
                     queue_name="backups", actor_name=f"backup_{step}") == 1, step
    assert check("worker", load_config(worker_env)) == (True, f"http://127.0.0.1:{metrics_port}/ answered 200")


def test_scheduler_leadership_and_last_fire(client, worker_env, engine_config, redis_client):  # noqa: ANN001
    assert value(scrape(client), "qbm_scheduler_leader") == 0
    proc = subprocess.Popen([sys.executable, "-m", "qbm.cli", "scheduler"], env=worker_env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: value(scrape(client), "qbm_scheduler_leader") == 1, timeout=30,
                   what="the scheduler to take the leader lease")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    # A clean stop gives the lease up at once: no leader any more.
    assert value(scrape(client), "qbm_scheduler_leader") == 0
    # Firing a schedule records the last fire time that /metrics shows.
    assert redis_client.get(scheduler_last_fire(engine_config.key_prefix)) is None
    client.post("/api/v1/storage", json={"name": "d", "type": "local", "is_default": True,
                                         "path": str(engine_config.storage_roots[0] / "b")})
    schedule = client.post("/api/v1/schedules", json={"name": "n", "interval_seconds": 3600,
                                                      "collections": ["docs"]}).get_json()["result"]
    before = time.time()
    assert client.post(f"/api/v1/schedules/{schedule['id']}/run").status_code == 200
    fired = value(scrape(client), "qbm_scheduler_last_fire_timestamp_seconds")
    assert before - 1 <= fired <= time.time() + 1


def test_metrics_need_no_api_key(engine_config):  # noqa: ANN001
    from api.app import create_app

    app = create_app(dataclasses.replace(engine_config, api_keys=("k-123456",)))
    client = app.test_client()
    assert client.get("/api/v1/jobs").status_code == 401
    assert "qbm_jobs" in client.get("/metrics").get_data(as_text=True)
