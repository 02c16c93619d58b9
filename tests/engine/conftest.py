"""Fixtures for end-to-end engine tests: a real ``qbm worker`` subprocess and the API in front of it.

Jobs go in through the real API (Flask test client) with the real enqueuer, the worker processes them
from real Redis, talking to the Qdrant double over HTTP and to local disk or moto's S3.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

from shared.adapters.redis_conn import connect
from shared.records.job_store import JobStore
from shared.runtime.config import Config
from tests.waiting import wait_until  # noqa: F401 - the engine tests import it from here

REPO = Path(__file__).resolve().parents[2]


class QbmProcess:
    """A ``qbm`` command in its own process group, so a test can SIGKILL the whole thing (the command and every
    process it started) like a crash or a lost machine. Its output goes to ``log_path``."""

    args: tuple[str, ...] = ()
    stop_timeout = 30.0

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([sys.executable, "-m", "qbm.cli", *self.args], env=self.env, cwd=REPO,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL every process of the group at once."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class WorkerProcess(QbmProcess):
    """``qbm worker``: its supervisor, Dramatiq's master and one worker process of two threads."""

    args = ("worker", "--processes", "1", "--threads", "2")


class SchedulerProcess(QbmProcess):
    """``qbm scheduler``."""

    args = ("scheduler",)
    stop_timeout = 15.0


def make_engine_config(redis_url: str, key_prefix: str, qdrant_url: str, tmp_path: Path, secret_key: str, *,
                       qdrant_api_key: str | None = None, qdrant_peers: tuple[tuple[str, str], ...] = (),
                       set_wait_seconds: int = 600) -> Config:
    """The API's config for an engine test: its own storage root under ``tmp_path`` and key prefix."""
    root = tmp_path / "storage"
    root.mkdir()
    return Config(
        redis_url=redis_url,
        redis_url_explicit=True,
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
        data_dir=tmp_path / "data",
        storage_roots=(root,),
        key_prefix=key_prefix,
        secret_keys=(secret_key,),
        qdrant_peers=qdrant_peers,
        set_wait_seconds=set_wait_seconds,
    )


def worker_env_for(config: Config) -> dict[str, str]:
    """A ``qbm worker`` environment with the same Redis, prefix, Qdrant (and key), storage roots and secret key
    as ``config``; nothing else of the test process's QBM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update({
        "QBM_REDIS_URL": config.redis_url,
        "QBM_KEY_PREFIX": config.key_prefix,
        "QBM_QDRANT_URL": config.qdrant_url,
        "QBM_QDRANT_API_KEY": config.qdrant_api_key or "",
        "QBM_DATA_DIR": str(config.data_dir),
        "QBM_STORAGE_ROOTS": ":".join(str(p) for p in config.storage_roots),
        "QBM_LOG_LEVEL": "INFO",
        "QBM_SECRET_KEY": ",".join(config.secret_keys),
        "QBM_QDRANT_PEERS": ",".join(f"{peer}={url}" for peer, url in config.qdrant_peers),
        "QBM_SET_WAIT_SECONDS": str(config.set_wait_seconds),
        "QBM_PEER_STREAMS": str(config.peer_stream_limit),
    })
    return env


@pytest.fixture
def engine_config(redis_url: str, key_prefix: str, qdrant, tmp_path: Path, secret_key: str) -> Config:  # noqa: ANN001
    return make_engine_config(redis_url, key_prefix, qdrant.url, tmp_path, secret_key)


@pytest.fixture
def worker_env(engine_config: Config) -> dict[str, str]:
    return worker_env_for(engine_config)


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(worker_env, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(start_worker: Callable[[], WorkerProcess]) -> WorkerProcess:
    return start_worker()


@pytest.fixture
def app(engine_config: Config):  # noqa: ANN201
    from api.app import create_app

    return create_app(engine_config)


@pytest.fixture
def client(app):  # noqa: ANN001, ANN201
    return app.test_client()


@pytest.fixture
def jobs(engine_config: Config) -> JobStore:
    return JobStore(connect(engine_config.redis_url), engine_config.key_prefix)


def wait_for_job(jobs: JobStore, job_id: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
                 timeout: float = 60.0, worker: WorkerProcess | None = None) -> dict:
    """Poll the job until its status is one of ``statuses`` (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    job = jobs.get(job_id)
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job.status in statuses:
            return job.to_dict()
        time.sleep(0.05)
    detail = f"\nworker log:\n{worker.log()[-4000:]}" if worker else ""
    raise AssertionError(f"job {job_id} still {job.status} (progress {job.progress}) "
                         f"after {timeout}s: {job}{detail}")
