"""Secrets in flight: after a whole backup + restore run against S3 with a real worker, no secret is in any
API response, any job (metadata, error, steps), any log line of the API or the worker, or anywhere in Redis.

The secrets are distinctive random strings, so a hit is never a coincidence: the S3 secret key (the 40 random
characters moto's IAM made for the test user: S3 checks signatures, so it has to be the real one), the API key,
a recover api_key and QBM_SECRET_KEY itself.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from shared.runtime.config import Config
from shared.runtime.logs import JsonFormatter
from tests.engine.conftest import (  # noqa: F401 - fixtures used by name
    WorkerProcess,
    engine_config,
    jobs,
    start_worker,
    wait_for_job,
    worker,
    worker_env_for,
)
from tests.security.redis_dump import dump_prefix

MiB = 1024 * 1024
API_KEY = f"APIKEY-{uuid.uuid4().hex}"
RECOVER_KEY = f"RECOVERKEY-{uuid.uuid4().hex}"


class Recorder:
    """The Flask test client with the API key, keeping every response (status, headers, body)."""

    def __init__(self, app: Any) -> None:
        self._client = app.test_client()
        self.responses: list[tuple[str, str, int, str, str]] = []

    def call(self, method: str, path: str, *, key: str | None = API_KEY, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = self._client.open(path, method=method, headers=headers, **kwargs)
        body = resp.get_data(as_text=True)
        self.responses.append((method, path, resp.status_code, str(resp.headers), body))
        return resp

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == status, (method, path, resp.status_code, resp.get_data(as_text=True))
        return resp.get_json()["result"]


@pytest.fixture
def worker_env(engine_config: Config) -> dict[str, str]:  # noqa: F811
    """As the engine tests' worker environment, but logging at DEBUG: the most it ever writes is what
    must be clean."""
    return {**worker_env_for(engine_config), "QBM_LOG_LEVEL": "DEBUG"}


@pytest.fixture
def secured_config(engine_config: Config) -> Config:  # noqa: F811
    return replace(engine_config, api_keys=(API_KEY,))


@pytest.fixture
def api_logs() -> Iterator[list[str]]:
    """Every log line the API process writes during the test, formatted as in production (JSON)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(previous)


def _job_hashes(redis_client: Any, prefix: str) -> list[dict[bytes, bytes]]:
    found = []
    for key in redis_client.scan_iter(match=f"{prefix}job:*", count=1000):
        if redis_client.type(key) == b"hash":
            found.append(redis_client.hgetall(key))
    return found


def test_no_secret_anywhere_after_backup_and_restore_through_s3(
    secured_config, worker, jobs, qdrant, s3_server, s3_bucket, redis_client, key_prefix, api_logs,  # noqa: F811
    caplog, secret_key,
):
    from api.app import create_app

    caplog.set_level(logging.DEBUG)
    s3_secret = s3_server.secret_key
    api = Recorder(create_app(secured_config))
    qdrant.create_collection("docs", points=123, size_bytes=2 * MiB, shard_number=2)

    s3 = {"name": "offsite", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": s3_bucket,
          "s3_region": s3_server.region, "s3_access_key": s3_server.access_key, "s3_secret_key": s3_secret}
    tested = api.ok("POST", "/api/v1/storage/test", json=s3)
    assert tested["success"] is True, tested
    storage = api.ok("POST", "/api/v1/storage", 201, json={**s3, "is_default": True})
    api.ok("PUT", f"/api/v1/storage/{storage['id']}", json={"s3_secret_key": s3_secret, "name": "offsite-2"})
    api.ok("GET", "/api/v1/storage")
    api.ok("GET", f"/api/v1/storage/{storage['id']}")

    backup = api.ok("POST", "/api/v1/jobs", 201, json={"type": "backup", "collection_name": "docs"})
    done = wait_for_job(jobs, backup["id"], worker=worker)
    assert done["status"] == "completed", done
    backup_id = done["snapshot_name"]

    qdrant.drop_collection("docs")
    pulled = api.ok("POST", "/api/v1/jobs", 201, json={"type": "restore", "collection_name": "docs",
                                                        "snapshot_name": backup_id})
    uploaded = api.ok("POST", "/api/v1/jobs", 201, json={
        "type": "restore", "collection_name": "docs", "snapshot_name": backup_id,
        "metadata": {"target_collection": "docs-copy", "upload": True}})
    # A restore of a backup that is not there is refused at submission (its storage was read to find out).
    refused = api.call("POST", "/api/v1/jobs", json={"type": "restore", "collection_name": "docs",
                                                     "snapshot_name": "20260101T000000Z-deadbeef"})
    assert refused.status_code == 404, refused.get_data(as_text=True)
    for job_id, status in ((pulled["id"], "completed"), (uploaded["id"], "completed")):
        finished = wait_for_job(jobs, job_id, worker=worker)
        assert finished["status"] == status, finished
    assert qdrant.points_count("docs") == qdrant.points_count("docs-copy") == 123

    # Everything a caller can read back.
    for job_id in (backup["id"], pulled["id"], uploaded["id"]):
        api.ok("GET", f"/api/v1/jobs/{job_id}")
    api.call("GET", "/api/v1/jobs")
    api.ok("GET", "/api/v1/backups", query_string={"storage_id": storage["id"]})
    api.ok("GET", f"/api/v1/backups/{storage['id']}/{backup_id}")
    snapshot = api.ok("POST", "/api/v1/collections/docs/snapshots")
    api.ok("PUT", "/api/v1/collections/restored/snapshots/recover",
           json={"location": f"{secured_config.qdrant_url}/collections/docs/snapshots/{snapshot['name']}",
                 "api_key": RECOVER_KEY})
    refused = api.call("GET", f"/api/v1/storage/{storage['id']}", key=f"{API_KEY}-wrong")
    assert refused.status_code == 401

    # Where the secrets could have leaked to.
    worker_log = worker.log()
    haystacks: dict[str, str] = {
        "API responses": json.dumps(api.responses),
        "API log lines": "\n".join(api_logs) + "\n" + caplog.text,
        "worker log": worker_log,
        "job hashes": repr(_job_hashes(redis_client, key_prefix)),
        "Redis": repr(dump_prefix(redis_client, key_prefix)),
    }
    # The captures are real: they hold what the run did.
    assert len(api.responses) >= 15
    assert backup["id"] in worker_log and pulled["id"] in worker_log
    assert api_logs and len(_job_hashes(redis_client, key_prefix)) >= 3  # the refused restore stored none
    assert storage["id"] in haystacks["Redis"] and backup_id in haystacks["job hashes"]

    secrets = {"S3 secret key": s3_secret, "API key": API_KEY, "recover api_key": RECOVER_KEY,
               "QBM_SECRET_KEY": secret_key}
    leaks = [f"{what} in {where}" for what, value in secrets.items()
             for where, text in haystacks.items() if value in text]
    assert leaks == []


def test_a_worker_without_the_right_key_fails_the_job_with_the_reason(
    engine_config, start_worker, jobs, qdrant, s3_server, s3_bucket, worker_env, tmp_path: Path,  # noqa: F811
):
    from api.app import create_app

    client = create_app(engine_config).test_client()
    qdrant.create_collection("docs", points=10, size_bytes=64 * 1024)
    resp = client.post("/api/v1/storage", json={
        "name": "offsite", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": s3_bucket,
        "s3_region": s3_server.region, "s3_access_key": s3_server.access_key, "s3_secret_key": s3_server.secret_key,
        "is_default": True})
    assert resp.status_code == 201, resp.get_json()

    stranger = WorkerProcess({**worker_env, "QBM_SECRET_KEY": Fernet.generate_key().decode()},
                             tmp_path / "stranger.log").start()
    try:
        job = client.post("/api/v1/jobs", json={"type": "backup", "collection_name": "docs"}).get_json()["result"]
        done = wait_for_job(jobs, job["id"], worker=stranger)
    finally:
        stranger.stop()
    assert done["status"] == "failed", done
    assert "QBM_SECRET_KEY" in done["error"] and "cannot be decrypted" in done["error"], done["error"]
    assert s3_server.secret_key not in json.dumps(done) and s3_server.secret_key not in stranger.log()
