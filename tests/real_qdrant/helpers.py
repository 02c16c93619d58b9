"""What the real-Qdrant tests do through QBM's API: register storage, run a job to its end, read what is stored."""

from __future__ import annotations

import json
from typing import Any

from shared.domain.manifest import manifest_key
from shared.records.job_store import JobStore
from tests.engine.conftest import WorkerProcess, make_engine_config, wait_for_job
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend

__all__ = ["post_job", "register_storage", "sha256_of", "storage_backend", "run_job", "stored_manifest",
           "listed_backups", "cluster_engine_config"]

JOB_TIMEOUT = 180.0


def run_job(client: Any, jobs: JobStore, worker: WorkerProcess, *, expect: str = "completed",
            timeout: float = JOB_TIMEOUT, **body: Any) -> dict:
    """``POST /api/v1/jobs`` and wait (with a deadline) until the job ends; assert it ended ``expect``."""
    job = post_job(client, **body)
    done = wait_for_job(jobs, job["id"], worker=worker, timeout=timeout)
    assert done["status"] == expect, f"{done}\nworker log:\n{worker.log()[-4000:]}"
    return done


def stored_manifest(app: Any, storage_id: str, collection: str, backup_id: str) -> dict:
    storage = storage_backend(app, storage_id)
    return json.loads(storage.read_bytes(manifest_key(collection, backup_id)))


def listed_backups(client: Any, storage_id: str, collection: str) -> list[dict]:
    resp = client.get(f"/api/v1/backups?storage_id={storage_id}&collection={collection}")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["result"]["items"]


def cluster_engine_config(cluster: Any, redis_url: str, key_prefix: str, tmp_path: Any, secret_key: str,
                          **extra: Any) -> Any:
    """QBM's config for a cluster whose peers share one host: QBM talks to the first peer and is told every
    peer's REST URL by its p2p URI (``QBM_QDRANT_PEERS``), as ``GET /cluster`` shows it."""
    first = cluster.peers[0]
    peers = tuple((p.p2p_uri, p.url) for p in cluster.peers)
    return make_engine_config(redis_url, key_prefix, first.url, tmp_path, secret_key, qdrant_api_key=first.api_key,
                              qdrant_peers=peers, **extra)
