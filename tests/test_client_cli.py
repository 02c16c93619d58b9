"""``qbm backup now / backups list / jobs list / jobs watch`` as a person runs them: the real ``qbm`` command in
a subprocess, talking real HTTP to the API (served in a thread here), real Redis behind it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from api.app import create_app
from shared.adapters.storage import LocalStorage
from shared.records.job_store import JobStore
from shared.runtime.config import Config
from tests.api.helpers import closed_port_url
from tests.backup_factory import put_backup
from tests.recorder import EnqueueRecorder

REPO = Path(__file__).resolve().parents[1]
KEY = "cli-key-9f8e7d"


class Served:
    def __init__(self, url: str, enqueued: list[str], storage_root: Path) -> None:
        self.url, self.enqueued, self.storage_root = url, enqueued, storage_root


@pytest.fixture
def api(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "backups"
    root.mkdir()
    enqueued = EnqueueRecorder()
    config = Config(redis_url=redis_url, redis_url_explicit=True, qdrant_url=closed_port_url(),
                    key_prefix=key_prefix, storage_roots=(root,), data_dir=tmp_path, api_keys=(KEY,))
    server = make_server("127.0.0.1", 0, create_app(config, enqueue=enqueued), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.server_port}", enqueued, root)
    server.shutdown()
    thread.join(5)


@pytest.fixture
def jobs(redis_client, key_prefix) -> JobStore:
    return JobStore(redis_client, key_prefix)


def qbm(*args: str, url: str, key: str | None = KEY, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env["QBM_API_URL"] = url
    if key:
        env["QBM_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "qbm.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def add_storage(api: Served) -> dict:
    response = requests.post(f"{api.url}/api/v1/storage", headers={"X-API-Key": KEY}, timeout=5,
                             json={"name": "disk", "type": "local", "path": str(api.storage_root), "is_default": True})
    assert response.status_code == 201, response.text
    return response.json()["result"]


def test_backup_now_then_jobs_list(api, jobs):
    storage = add_storage(api)
    made = qbm("backup", "now", "docs", url=api.url)
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.split()[1]
    assert made.stdout.startswith(f"job {job_id} created: backup of docs to storage {storage['id']}")
    assert jobs.get(job_id).status == "pending" and api.enqueued == [job_id]

    shard = qbm("backup", "now", "docs", "--shard", "2", url=api.url)
    assert shard.returncode == 0 and "shard_backup of docs" in shard.stdout

    listed = qbm("jobs", "list", url=api.url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATUS", "PROGRESS", "COLLECTION", "CREATED", "ERROR"]
    assert job_id in lines[2] and "pending" in lines[2] and "docs/2" in lines[1]
    assert lines[-1] == "2 of 2 job(s)"
    assert qbm("jobs", "list", "--type", "restore", url=api.url).stdout.splitlines()[-1] == "0 of 0 job(s)"


def test_backups_list(api):
    storage = add_storage(api)
    now = datetime.now(UTC)
    old = put_backup(LocalStorage(api.storage_root), "docs", now - timedelta(days=1), payload=b"x" * 3000)
    new = put_backup(LocalStorage(api.storage_root), "docs", now, shard_id=1)
    listed = qbm("backups", "list", "--collection", "docs", url=api.url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[1].split()[:4] == [new.backup_id, "docs", "1", "64"]
    assert lines[2].split()[:5] == [old.backup_id, "docs", "-", "2.9", "KiB"]
    assert lines[-1] == f"2 of 2 backup(s) in storage {storage['id']}"


def test_jobs_watch_follows_a_job_to_its_end(api, jobs):
    job = jobs.create("backup", "docs")
    jobs.transition(job.id, "running")
    jobs.set_progress(job.id, 40)
    watcher = subprocess.Popen([sys.executable, "-m", "qbm.cli", "jobs", "watch", job.id],
                               env={**{k: v for k, v in os.environ.items() if not k.startswith("QBM_")},
                                    "QBM_API_URL": api.url, "QBM_API_KEY": KEY},
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = watcher.stdout.readline()  # the bar as the watcher first saw it
    assert "[############------------------]  40%  running" in first
    jobs.set_progress(job.id, 100)
    jobs.transition(job.id, "completed")
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert out.splitlines()[-1].startswith("[" + "#" * 30 + "] 100%  completed  backup docs")


def test_jobs_watch_of_a_failed_job_says_why(api, jobs):
    job = jobs.create("shard_backup", "docs", shard_id=3)
    jobs.transition(job.id, "running")
    jobs.transition(job.id, "failed", error="Qdrant: no such shard (HTTP 404)")
    result = qbm("jobs", "watch", job.id, url=api.url)
    assert result.returncode == 1
    assert "failed" in result.stdout and "shard_backup docs shard 3" in result.stdout
    assert result.stderr.strip() == f"job {job.id} failed: Qdrant: no such shard (HTTP 404)"


def test_errors_are_one_clear_line(api):
    unreachable = qbm("jobs", "list", url=closed_port_url())
    assert unreachable.returncode == 4
    assert unreachable.stderr.count("\n") == 1 and "cannot reach the QBM API" in unreachable.stderr
    assert "Connection refused" in unreachable.stderr and "Traceback" not in unreachable.stderr

    wrong_key = qbm("jobs", "list", url=api.url, key="wrong")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.startswith("qbm: API error 401: missing or invalid API key")
    assert wrong_key.stderr.count("\n") == 1

    missing = qbm("jobs", "watch", "0000000000000000deadbeef00", url=api.url)
    assert missing.returncode == 1
    assert missing.stderr == "qbm: API error 404: job 0000000000000000deadbeef00 not found\n"

    no_storage = qbm("backup", "now", "docs", url=api.url)
    assert no_storage.returncode == 1
    assert no_storage.stderr.startswith("qbm: API error 422: metadata.storage_id:")
