"""The terminal client as a person runs it: the real ``qbm`` command in a subprocess, talking real HTTP to the API
(served in a thread here), real Redis behind it; the end-to-end tests add a real ``qbm worker`` and the Qdrant
double, so a backup made with ``qbm backup now --watch`` is restored with ``qbm restore``."""

from __future__ import annotations

import os
import re
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
from tests.engine.conftest import WorkerProcess, make_engine_config, worker_env_for
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


def qbm(*args: str, url: str, key: str | None = KEY, timeout: float = 30, extra_env: dict | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env["QBM_API_URL"] = url
    if key:
        env["QBM_API_KEY"] = key
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "qbm.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, input=stdin if stdin is not None else "")


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


def test_backups_list_pin_show_delete_and_prune(api):
    storage = add_storage(api)
    disk = LocalStorage(api.storage_root)
    now = datetime.now(UTC)
    oldest = put_backup(disk, "docs", now - timedelta(days=3))
    old = put_backup(disk, "docs", now - timedelta(days=2), payload=b"x" * 3000)
    mid = put_backup(disk, "docs", now - timedelta(days=1), schedule_id="sc_nightly000001")
    new = put_backup(disk, "docs", now, shard_id=1)
    listed = qbm("backups", "list", "--collection", "docs", url=api.url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["BACKUP", "ID", "COLLECTION", "SHARD", "SIZE", "CREATED", "PINNED", "MADE", "BY"]
    assert lines[1].split()[:4] == [new.backup_id, "docs", "1", "64"]
    assert lines[2].split()[0] == mid.backup_id and lines[2].split()[-2:] == ["-", "sc_nightly000001"]
    assert lines[3].split()[:5] == [old.backup_id, "docs", "-", "2.9", "KiB"]
    assert lines[3].split()[-3:] == ["-", "by", "hand"]
    assert lines[4].split()[0] == oldest.backup_id
    assert lines[-1] == f"4 of 4 backup(s) in storage {storage['id']}"

    pinned = qbm("backups", "pin", old.backup_id, url=api.url)
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.startswith(f"backup {old.backup_id} pinned")
    assert qbm("backups", "list", url=api.url).stdout.splitlines()[3].split()[-3:] == ["yes", "by", "hand"]
    shown = qbm("backups", "show", old.backup_id, "--collection", "docs", url=api.url)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^Pinned:\s+yes$", shown.stdout, re.M) and re.search(r"^Made by:\s+hand$", shown.stdout, re.M)
    assert re.search(rf"^SHA-256:\s+{old.sha256}$", shown.stdout, re.M)

    refused = qbm("backups", "delete", old.backup_id, url=api.url)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"qbm: API error 409: backup {old.backup_id} is pinned; unpin it first")
    pruned = qbm("backups", "prune", "docs", "--keep-last", "1", "--dry-run", url=api.url)
    assert pruned.returncode == 0, pruned.stderr
    # The pinned backup does not count towards keep_last: of the unpinned collection backups, the newest stays.
    assert pruned.stdout.splitlines() == [f"would delete {oldest.backup_id} (64 B, {oldest.created_at})",
                                          "1 would delete, 3 kept (1 of them pinned)"]

    assert qbm("backups", "unpin", old.backup_id, url=api.url).stdout.startswith(f"backup {old.backup_id} unpinned")
    deleted = qbm("backups", "delete", old.backup_id, url=api.url)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"backup {old.backup_id} of docs deleted from storage {storage['id']}\n"
    assert not disk.exists(old.key)
    missing = qbm("backups", "show", old.backup_id, url=api.url)
    assert missing.returncode == 1 and "API error 404" in missing.stderr


def test_jobs_watch_shows_bytes_speed_and_eta_then_the_backup_id(api, jobs):
    job = jobs.create("backup", "docs", metadata={"storage_id": "st_disk0001"})
    jobs.transition(job.id, "running")
    jobs.set_progress(job.id, 40, moved=4 * 1024 * 1024, total=10 * 1024 * 1024)
    watcher = subprocess.Popen([sys.executable, "-m", "qbm.cli", "jobs", "watch", job.id],
                               env={**{k: v for k, v in os.environ.items() if not k.startswith("QBM_")},
                                    "QBM_API_URL": api.url, "QBM_API_KEY": KEY},
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = watcher.stdout.readline()  # the bar as the watcher first saw it
    assert first.startswith("[############------------------]  40%  running    backup docs  4.0 MiB / 10.0 MiB")
    jobs.set_progress(job.id, 60, moved=6 * 1024 * 1024, total=10 * 1024 * 1024)
    second = watcher.stdout.readline()  # two samples apart in time: a speed, and from it an ETA
    assert re.fullmatch(r"\[#{18}-{12}\]  60%  running    backup docs  6\.0 MiB / 10\.0 MiB  [\d.]+ (KiB|MiB)/s  "
                        r"ETA \d+:\d\d\n", second), second
    jobs.update(job.id, snapshot_name="20261124T021500Z-1a2b3c4d")
    jobs.merge_metadata(job.id, {"size": 10 * 1024 * 1024, "sha256": "ab" * 32})
    jobs.set_progress(job.id, 100, moved=10 * 1024 * 1024, total=10 * 1024 * 1024)
    jobs.transition(job.id, "completed")
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert lines[-3].startswith("[" + "#" * 30 + "] 100%  completed  backup docs  10.0 MiB / 10.0 MiB")
    assert "/s" not in lines[-3]  # no speed once it ended
    assert re.fullmatch(r"backup 20261124T021500Z-1a2b3c4d completed in \d+:\d\d: 10\.0 MiB, sha256 (ab){32}, "
                        r"in storage st_disk0001", lines[-2]), lines[-2]
    assert lines[-1] == "restore it with: qbm restore 20261124T021500Z-1a2b3c4d --storage st_disk0001"


def test_jobs_watch_of_a_failed_job_says_why(api, jobs):
    job = jobs.create("shard_backup", "docs", shard_id=3)
    jobs.transition(job.id, "running")
    jobs.transition(job.id, "failed", error="Qdrant: no such shard (HTTP 404)")
    result = qbm("jobs", "watch", job.id, url=api.url)
    assert result.returncode == 1
    assert "failed" in result.stdout and "shard_backup docs shard 3" in result.stdout
    assert result.stderr.strip() == f"job {job.id} failed: Qdrant: no such shard (HTTP 404)"


def test_jobs_show_cancel_retry_and_whole_errors(api, jobs):
    add_storage(api)
    long_error = "Qdrant refused to recover 'docs' from backup 20261124T021500Z-1a2b3c4d: " + "x" * 150
    failed = jobs.create("restore", "docs", snapshot_name="20261124T021500Z-1a2b3c4d")
    jobs.transition(failed.id, "running")
    jobs.transition(failed.id, "failed", error=long_error)
    listed = qbm("jobs", "list", url=api.url)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].endswith(long_error)  # not cut

    made = qbm("backup", "now", "docs", url=api.url).stdout.split()[1]
    shown = qbm("jobs", "show", made, url=api.url)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^Job:\s+{made}$", shown.stdout, re.M) and re.search(r"^Status:\s+pending$", shown.stdout, re.M)
    assert re.search(r"^  unchecked: the collection could not be checked on Qdrant", shown.stdout, re.M)

    cancelled = qbm("jobs", "cancel", made, url=api.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"job {made} cancelled: cancelled by request\n"
    assert jobs.get(made).status == "cancelled"
    again = qbm("jobs", "cancel", made, url=api.url)
    assert again.returncode == 1
    assert again.stderr == (f"qbm: API error 409: job {made} is cancelled; only pending or running jobs can be "
                            "cancelled\n")
    retried = qbm("jobs", "retry", made, url=api.url)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"job {made} is pending again")
    assert jobs.get(made).status == "pending" and api.enqueued == [made, made]


def test_schedules_create_list_show_disable_run_delete(api, jobs):
    storage = add_storage(api)
    made = qbm("schedules", "create", "nightly", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin",
               "--collection", "docs", "--collection", "other", "--keep-last", "7", url=api.url)
    assert made.returncode == 0, made.stderr
    schedule_id = made.stdout.split()[1]
    assert made.stdout.startswith(f"schedule {schedule_id} created: nightly, 30 2 * * * (Europe/Berlin), next run 20")
    listed = qbm("schedules", "list", url=api.url)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1]
    assert row.split()[:5] == [schedule_id, "nightly", "yes", "backup", "docs,other"] and "keep last 7" in row
    shown = qbm("schedules", "show", schedule_id, url=api.url).stdout
    assert re.search(r"^Retention:\s+keep last 7  \(only backups this schedule made; never pinned ones\)$", shown,
                     re.M)
    assert re.search(r"^Storage:\s+the default backend$", shown, re.M)

    off = qbm("schedules", "disable", schedule_id, url=api.url)
    assert off.returncode == 0 and off.stdout == f"schedule {schedule_id} disabled\n"
    assert qbm("schedules", "list", url=api.url).stdout.splitlines()[1].split()[2] == "no"
    assert qbm("schedules", "enable", schedule_id, url=api.url).stdout.startswith(f"schedule {schedule_id} enabled")

    ran = qbm("schedules", "run", schedule_id, url=api.url)
    assert ran.returncode == 0, ran.stderr
    run_jobs = [j for j in jobs.list()[0] if j.metadata.get("schedule_id") == schedule_id]
    assert sorted(j.collection_name for j in run_jobs) == ["docs", "other"]
    assert all(j.storage_id == storage["id"] for j in run_jobs)
    assert ran.stdout.startswith(f"schedule {schedule_id} run: running, job(s) ")
    assert all(j.id in ran.stdout for j in run_jobs)

    every = qbm("schedules", "create", "often", "--every", "60", "--collection", "*", "--disabled", url=api.url)
    assert every.returncode == 0 and "every 60s, next run -" in every.stdout
    cannot_list = qbm("schedules", "run", every.stdout.split()[1], url=api.url)  # '*' needs Qdrant, which is down
    assert cannot_list.returncode == 1 and cannot_list.stdout == ""
    assert cannot_list.stderr.startswith(f"qbm: schedule {every.stdout.split()[1]} run failed: ")
    bad = qbm("schedules", "create", "bad", "--cron", "61 * * * *", "--collection", "docs", url=api.url)
    assert bad.returncode == 1 and bad.stderr.startswith("qbm: API error 422: cron:")
    neither = qbm("schedules", "create", "x", "--collection", "docs", url=api.url)
    assert neither.returncode == 2 and "one of the arguments --cron --every is required" in neither.stderr

    gone = qbm("schedules", "delete", schedule_id, url=api.url)
    assert gone.returncode == 0 and gone.stdout == f"schedule {schedule_id} deleted (its backups stay)\n"
    after = qbm("schedules", "show", schedule_id, url=api.url)
    assert after.returncode == 1 and after.stderr == f"qbm: API error 404: schedule {schedule_id} not found\n"


def test_storage_create_list_show_test_delete(api, s3_server, s3_bucket):
    path = api.storage_root / "disk"
    made = qbm("storage", "create", "disk", "--type", "local", "--path", str(path), "--default", url=api.url)
    assert made.returncode == 0, made.stderr
    storage_id = made.stdout.split()[2]
    assert made.stdout == f"storage backend {storage_id} created: disk (local, {path}), the default\n"
    listed = qbm("storage", "list", url=api.url)
    assert listed.stdout.splitlines()[1].split() == [storage_id, "disk", "local", "yes", str(path)]
    shown = qbm("storage", "show", storage_id, url=api.url).stdout
    assert re.search(rf"^Path:\s+{re.escape(str(path))}$", shown, re.M)
    assert re.search(r"^Default:\s+yes$", shown, re.M)

    tested = qbm("storage", "test", "--type", "local", "--path", str(api.storage_root / "probe"), url=api.url)
    assert tested.returncode == 0 and tested.stdout.startswith("ok: wrote, read back and removed a test file")
    outside = qbm("storage", "test", "--type", "local", "--path", "/", url=api.url)
    assert outside.returncode == 1 and "API error 422: path:" in outside.stderr
    s3_args = ("storage", "test", "--type", "s3", "--endpoint", s3_server.endpoint, "--bucket", s3_bucket,
               "--region", s3_server.region, "--access-key", s3_server.access_key)
    from_env = qbm(*s3_args, url=api.url, extra_env={"QBM_S3_SECRET_KEY": s3_server.secret_key})
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout.startswith("ok: wrote, read back and removed a test object")
    from_stdin = qbm(*s3_args, url=api.url, stdin=s3_server.secret_key + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    no_secret = qbm(*s3_args, url=api.url, stdin="")
    assert no_secret.returncode == 1
    assert no_secret.stderr == ("qbm: an S3 backend needs its secret key: set QBM_S3_SECRET_KEY or give it on "
                                "standard input\n")
    missing_bucket = qbm(*s3_args[:7], "qbm-no-such-bucket", *s3_args[8:], url=api.url,
                         extra_env={"QBM_S3_SECRET_KEY": s3_server.secret_key})
    assert missing_bucket.returncode == 1 and missing_bucket.stderr.startswith("failed: ")
    assert s3_server.secret_key not in from_env.stdout + from_env.stderr + missing_bucket.stderr

    put_backup(LocalStorage(path), "docs", datetime.now(UTC))
    held = qbm("storage", "delete", storage_id, url=api.url)
    assert held.returncode == 1 and "holds 1 backup(s)" in held.stderr
    forced = qbm("storage", "delete", storage_id, "--force", url=api.url)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == f"storage backend {storage_id} deleted; the backups in it were not touched\n"
    assert qbm("storage", "list", url=api.url).stdout.splitlines()[-1] == "0 storage backend(s)"


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


# --- end to end: a real worker and the Qdrant double --------------------------------------------------------


@pytest.fixture
def engine_api(redis_url, key_prefix, qdrant, tmp_path, secret_key) -> Iterator[Served]:
    config = make_engine_config(redis_url, key_prefix, qdrant.url, tmp_path, secret_key)
    server = make_server("127.0.0.1", 0, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    worker = WorkerProcess(worker_env_for(config), tmp_path / "worker.log").start()
    served = Served(f"http://127.0.0.1:{server.server_port}", [], config.storage_roots[0])
    served.worker = worker  # type: ignore[attr-defined]
    yield served
    worker.stop()
    server.shutdown()
    thread.join(5)


def test_backup_now_watch_then_restore_by_the_printed_id(engine_api, qdrant):
    api = engine_api
    qdrant.create_collection("docs", points=77, size_bytes=16 * 1024 * 1024)
    made = qbm("storage", "create", "disk", "--type", "local", "--path", str(api.storage_root / "b"), "--default",
               url=api.url, key=None)
    assert made.returncode == 0, made.stderr
    storage_id = made.stdout.split()[2]
    qdrant.faults.throttle(4 * 1024 * 1024)  # ~4 s of transfer: the bar moves with bytes, speed and ETA

    backup = qbm("backup", "now", "docs", "--watch", url=api.url, key=None, timeout=120)
    assert backup.returncode == 0, backup.stderr + api.worker.log()[-3000:]
    lines = backup.stdout.splitlines()
    assert any(re.search(r"  running    backup docs  [\d.]+ (KiB|MiB) / 16\.\d MiB  [\d.]+ (KiB|MiB)/s  ETA \d+:\d\d$",
                         line) for line in lines), backup.stdout
    backup_id = re.fullmatch(r"restore it with: qbm restore (\S+) --storage " + storage_id, lines[-1]).group(1)
    assert lines[-2].startswith(f"backup {backup_id} completed in ")
    qdrant.faults.throttle(None)
    listed = qbm("backups", "list", url=api.url, key=None)
    assert backup_id in listed.stdout.splitlines()[1]

    refused = qbm("restore", backup_id, url=api.url, key=None)
    assert refused.returncode == 1
    assert refused.stderr == ("qbm: API error 409: metadata.replace: collection 'docs' already exists on Qdrant and "
                              "a restore would replace it; set metadata.replace to true to replace it, or restore "
                              "under another name with metadata.target_collection (with qbm: --replace, or --target "
                              "NAME)\n")
    copy = qbm("restore", backup_id, "--target", "docs-copy", "--watch", url=api.url, key=None, timeout=120)
    assert copy.returncode == 0, copy.stderr + api.worker.log()[-3000:]
    assert copy.stdout.splitlines()[0].startswith("job ") and (
        f"restore of backup {backup_id} into collection docs-copy from storage {storage_id}" in copy.stdout)
    assert re.fullmatch(rf"restore completed in \d+:\d\d: collection docs-copy restored from backup {backup_id} "
                        r"\(77 points\)", copy.stdout.splitlines()[-1]), copy.stdout
    assert qdrant.points_count("docs-copy") == 77

    qdrant.drop_collection("docs")
    qdrant.create_collection("docs", points=5)  # changed since the backup
    replaced = qbm("restore", backup_id, "--replace", "--watch", url=api.url, key=None, timeout=120)
    assert replaced.returncode == 0, replaced.stderr + api.worker.log()[-3000:]
    assert qdrant.points_count("docs") == 77
