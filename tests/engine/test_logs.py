"""Logs as an operator gets them: every line of `qbm api` and `qbm worker` is one JSON object, steps say
which job, step and collection they belong to, and no secret is ever written -- at DEBUG, over a full S3
backup and restore, including the default S3 backend registered from QBM_DEFAULT_S3_* at first start.

The secrets are distinctive random values, so finding one in a log means it leaked (and the test would
find any fragment of 12 characters or more of them, not just the whole value).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.runtime.logs import JsonFormatter, log_context, register_secret
from tests.engine.conftest import REPO, wait_until
from tests.engine.test_metrics import free_port

MiB = 1024 * 1024


def fragments(secret: str, size: int = 12) -> set[str]:
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "qbm.cli", *args], env=env, cwd=REPO,
                                stdout=log, stderr=log, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def secret_values(secret_key: str, s3_server) -> dict[str, str]:  # noqa: ANN001
    token = secrets.token_hex(12)
    return {
        "QBM_API_KEYS": f"apikey-{token}-A",
        "QBM_QDRANT_API_KEY": f"qdrantkey-{token}-Q",
        "QBM_DEFAULT_S3_SECRET_KEY": s3_server.secret_key,  # S3 checks signatures: the real one (40 random chars)
        "QBM_SECRET_KEY": secret_key,
        "other_s3_secret": f"s3other-{token}-T",
    }


@pytest.fixture
def qdrant_with_key(tmp_path: Path, secret_values: dict[str, str]) -> Iterator[object]:
    from tests.qdrant_double import QdrantDouble

    double = QdrantDouble(tmp_path / "qdrant", api_key=secret_values["QBM_QDRANT_API_KEY"])
    double.start()
    yield double
    double.stop()


def test_full_backup_and_restore_logs_json_with_context_and_no_secret(
        tmp_path, redis_url, key_prefix, s3_server, s3_bucket, qdrant_with_key, secret_values):  # noqa: ANN001
    qdrant = qdrant_with_key
    qdrant.create_collection("docs", points=123, size_bytes=3 * MiB)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update({
        "QBM_REDIS_URL": redis_url, "QBM_KEY_PREFIX": key_prefix, "QBM_QDRANT_URL": qdrant.url,
        "QBM_API_PORT": str(port), "QBM_DATA_DIR": str(tmp_path / "data"), "QBM_LOG_LEVEL": "DEBUG",
        "QBM_DEFAULT_S3_ENDPOINT": s3_server.endpoint, "QBM_DEFAULT_S3_BUCKET": s3_bucket,
        "QBM_DEFAULT_S3_REGION": s3_server.region, "QBM_DEFAULT_S3_ACCESS_KEY": s3_server.access_key,
        **{k: v for k, v in secret_values.items() if k.startswith("QBM_")},
    })
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = start(["api", "--workers", "1", "--threads", "4"], env, api_log)
    worker = start(["worker", "--processes", "1", "--threads", "2"], env, worker_log)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {secret_values['QBM_API_KEYS']}"}
    session = requests.Session()

    def get(path: str) -> dict:
        response = session.get(base + path, headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def finished(job_id: str) -> dict:
        holder: dict = {}

        def ended() -> bool:
            holder.update(get(f"/api/v1/jobs/{job_id}"))
            return holder["status"] in ("completed", "failed", "cancelled")

        wait_until(ended, timeout=90, what=f"job {job_id} to end")
        return holder

    try:
        def api_up() -> bool:
            try:
                return session.get(f"{base}/healthz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting its workers
                return False

        wait_until(api_up, timeout=60, what="qbm api to answer")
        healthcheck = subprocess.run([sys.executable, "-m", "qbm.healthcheck", "api"], env=env, cwd=REPO,
                                     capture_output=True, text=True, timeout=30)
        assert healthcheck.returncode == 0, healthcheck.stdout

        # First start registered the MinIO/S3 bucket of QBM_DEFAULT_S3_* as the default backend.
        storages = get("/api/v1/storage")
        assert [(s["type"], s["s3_bucket"], s["is_default"]) for s in storages] == [("s3", s3_bucket, True)]
        assert "s3_secret_key" not in storages[0]

        # Some failures on the way, logged at every level they are logged at.
        assert session.get(f"{base}/api/v1/jobs", headers={"X-API-Key": "wrong-key"}, timeout=10).status_code == 401
        probe = session.post(f"{base}/api/v1/storage/test", headers=auth, timeout=30, json={
            "name": "probe", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": "qbm-no-such-bucket",
            "s3_region": s3_server.region, "s3_access_key": "someone",
            "s3_secret_key": secret_values["other_s3_secret"]})
        assert probe.status_code == 200 and probe.json()["result"]["success"] is False, probe.text

        created = session.post(f"{base}/api/v1/jobs", headers=auth, timeout=10,
                               json={"type": "backup", "collection_name": "docs"})
        assert created.status_code == 201, created.text
        backup = finished(created.json()["result"]["id"])
        assert backup["status"] == "completed", backup

        qdrant.drop_collection("docs")
        created = session.post(f"{base}/api/v1/jobs", headers=auth, timeout=10, json={
            "type": "restore", "collection_name": "docs", "snapshot_name": backup["snapshot_name"]})
        assert created.status_code == 201, created.text
        restore = finished(created.json()["result"]["id"])
        assert restore["status"] == "completed", restore
        assert qdrant.points_count("docs") == 123
    finally:
        stop(worker)
        stop(api)

    lines = {"api": api_log.read_text().splitlines(), "worker": worker_log.read_text().splitlines()}
    records = {}
    for name, raw in lines.items():
        assert raw, f"qbm {name} wrote nothing"
        for line in raw:
            try:
                records.setdefault(name, []).append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"qbm {name} wrote a line that is not JSON: {line[:300]!r}")
        assert all(isinstance(r, dict) and {"ts", "level", "logger", "msg"} <= set(r) for r in records[name])
    # DEBUG really was on, and gunicorn's and Dramatiq's own lines came out as JSON too.
    assert any(r["level"] == "DEBUG" for r in records["worker"])
    assert any(r["logger"].startswith("gunicorn") for r in records["api"])
    assert any(r["logger"].startswith("dramatiq") for r in records["worker"])

    # Worker lines about the jobs carry job_id and step; QBM's own lines also the collection (a library's line
    # logged before the frame has read the job, such as Dramatiq's "Received args=", cannot know it yet).
    for job, steps in ((backup, {"create", "transfer", "finalize"}), (restore, {"prepare", "recover", "verify"})):
        mine = [r for r in records["worker"] if r.get("job_id") == job["id"]]
        assert {r.get("step") for r in mine} >= steps, job["type"]
        ours = [r for r in mine if r.get("step") and r["logger"].startswith("qbm")]
        assert ours and all(r.get("collection") == "docs" for r in ours), ours[:3]

    # No secret, nor any 12-character piece of one, in any line of either process.
    text = {name: "\n".join(raw) for name, raw in lines.items()}
    for secret_name, secret in secret_values.items():
        for name, content in text.items():
            leaked = [piece for piece in fragments(secret) if piece in content]
            assert not leaked, f"{secret_name} leaked into the {name} log: {leaked[:3]}"


def test_formatter_scrubs_secrets_from_message_traceback_and_fields() -> None:
    secret = f"sec-{secrets.token_hex(8)}"
    register_secret(secret)
    try:
        raise RuntimeError(f"connect failed with password {secret}")
    except RuntimeError:
        record = logging.LogRecord("qbm.test", logging.ERROR, __file__, 1, "using %s", (secret,), sys.exc_info())
    record.storage_id = f"id-with-{secret}"
    with log_context(job_id="j1", step="transfer", collection="docs"):
        line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert secret not in line and entry["msg"] == "using ***" and "password ***" in entry["exc"]
    assert entry["storage_id"] == "id-with-***"
    assert (entry["job_id"], entry["step"], entry["collection"]) == ("j1", "transfer", "docs")
