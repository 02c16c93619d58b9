"""What every bench shares: the machine line, the Qdrant double, a moto S3 server, real ``qbm worker``
processes, the API (test client), job polling straight from Redis, RSS sampling and clean-up.

Each bench runs under its own Redis key prefix (``qbmbench:<random>:``) in DB 15 by default and deletes
only keys under that prefix when it ends. Nothing here is part of the test run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from api.app import create_app  # noqa: E402
from shared.runtime.config import Config  # noqa: E402
from tests.qdrant_double import QdrantDouble  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_REDIS_URL = os.environ.get("QBM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
S3_ACCESS, S3_SECRET, S3_BUCKET = "benchaccess", "benchsecret", "bench"


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (f"machine: {os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}; load average at start {load}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling for a server to come up
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Moto:
    """moto's S3 server in its own process (so it does not share a GIL with the double or the client)."""

    proc: subprocess.Popen
    port: int
    endpoint: str = ""

    @classmethod
    def start(cls) -> Moto:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(port)
        moto = cls(proc, port, f"http://127.0.0.1:{port}")
        moto.client().make_bucket(S3_BUCKET)
        return moto

    def client(self) -> Any:
        from minio import Minio

        return Minio(f"127.0.0.1:{self.port}", S3_ACCESS, S3_SECRET, secure=False, region="us-east-1")

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop a process this bench started (its own session: the signal goes to its process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Bench:
    """A work directory, the double, a Redis prefix, an API test client; workers and moto on demand."""

    redis_url: str = DEFAULT_REDIS_URL
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qbm-bench-")))
    prefix: str = field(default_factory=lambda: f"qbmbench:{uuid.uuid4().hex[:8]}:")
    double: QdrantDouble | None = None
    moto: Moto | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    #: Where backups (and the baselines' copies) are written; None: inside ``work`` (on disk).
    storage_dir: Path | None = None
    #: A real Qdrant to work against (its URL, API key and the peers of its cluster) instead of the double.
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_peers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        self.root = (Path(tempfile.mkdtemp(prefix="qbm-bench-", dir=self.storage_dir)) if self.storage_dir
                     else self.work / "storage")
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = redis.Redis.from_url(self.redis_url)
        if self.qdrant_url is None:
            self.double = QdrantDouble(self.work / "qdrant")
            self.double.start()
            self.qdrant_url = self.double.url
        from cryptography.fernet import Fernet

        self.secret_key = Fernet.generate_key().decode()  # S3 secrets are stored encrypted (QBM_SECRET_KEY)
        self.config = Config(redis_url=self.redis_url, redis_url_explicit=True, qdrant_url=self.qdrant_url,
                             qdrant_api_key=self.qdrant_api_key, qdrant_peers=self.qdrant_peers,
                             data_dir=self.work / "data", storage_roots=(self.root,), key_prefix=self.prefix,
                             secret_keys=(self.secret_key,))
        self.client = create_app(self.config).test_client()
        self.storage_ids: dict[str, str] = {}

    # -- storage backends ---------------------------------------------------------------------------------

    def add_local_storage(self, name: str = "local") -> str:
        body = {"name": name, "type": "local", "path": str(self.root / name)}
        return self._add_storage(name, body)

    def add_s3_storage(self, name: str = "s3") -> str:
        if self.moto is None:
            self.moto = Moto.start()
        body = {"name": name, "type": "s3", "s3_endpoint": self.moto.endpoint, "s3_bucket": S3_BUCKET,
                "s3_region": "us-east-1", "s3_access_key": S3_ACCESS, "s3_secret_key": S3_SECRET}
        return self._add_storage(name, body)

    def _add_storage(self, name: str, body: dict) -> str:
        resp = self.client.post("/api/v1/storage", json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"could not add storage {name}: {resp.status_code} {resp.get_data(as_text=True)}")
        self.storage_ids[name] = resp.get_json()["result"]["id"]
        return self.storage_ids[name]

    def empty_storage(self, name: str) -> None:
        """Delete every backup a run stored in backend ``name`` (from :meth:`add_local_storage` or
        :meth:`add_s3_storage`), so the next run starts with the same free memory and moto holds nothing."""
        if name == "s3":
            assert self.moto is not None
            client = self.moto.client()
            for obj in client.list_objects(S3_BUCKET, recursive=True):
                client.remove_object(S3_BUCKET, obj.object_name)
            return
        for path in (self.root / name).rglob("*"):
            if path.is_file():
                path.unlink()

    # -- workers ----------------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
        assert self.qdrant_url is not None
        env.update(QBM_REDIS_URL=self.redis_url, QBM_KEY_PREFIX=self.prefix, QBM_QDRANT_URL=self.qdrant_url,
                   QBM_QDRANT_API_KEY=self.qdrant_api_key or "",
                   QBM_QDRANT_PEERS=",".join(f"{peer}={url}" for peer, url in self.qdrant_peers),
                   QBM_STORAGE_ROOTS=str(self.root), QBM_DATA_DIR=str(self.work / "data"),
                   QBM_LOG_LEVEL="WARNING", QBM_SECRET_KEY=self.secret_key)
        return env

    def start_worker(self, processes: int = 1, threads: int = 1, *, extra_env: dict[str, str] | None = None,
                     repo: Path = REPO) -> subprocess.Popen:
        """A real ``qbm worker`` run from ``repo`` (another checkout: before/after comparisons). Its JSON log
        lines (INFO) go to a file in ``work``; :meth:`step_times` reads when each step started from them."""
        env = self.env()
        env["QBM_LOG_LEVEL"] = "INFO"
        env.update(extra_env or {})
        log = self.work / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        stderr = open(log, "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "qbm.cli", "worker", "--processes", str(processes), "--threads", str(threads)],
            env=env, cwd=repo, start_new_session=True, stderr=stderr)
        stderr.close()
        self.workers.append(proc)
        self.wait_worker_ready(proc, processes)
        return proc

    def step_times(self, job_id: str) -> dict[str, float]:
        """Step name -> when it started (epoch seconds, from the workers' "step started" log lines; ms
        resolution), plus "end" for "job completed"."""
        times: dict[str, float] = {}
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if job_id not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("job_id") != job_id or entry.get("msg") not in ("step started", "job completed"):
                    continue
                at = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                name = "end" if entry["msg"] == "job completed" else entry.get("step", "?")
                times.setdefault(name, at)  # the first start (a retried step starts again later)
        return times

    def wait_worker_ready(self, proc: subprocess.Popen, processes: int, timeout: float = 60.0) -> None:
        """Until the master has ``processes`` children that finished importing (their RSS stops growing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = [p for p in psutil.Process(proc.pid).children(recursive=True)]
            workers = [p for p in kids if "dramatiq" in " ".join(p.cmdline())]
            if len(workers) >= processes + 1 or (processes == 1 and len(workers) >= 1):
                break
            time.sleep(0.1)  # polling for child processes to appear
        time.sleep(2.0)  # let them import and connect before anything is measured (not synchronisation)

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_process(proc)
        self.workers.clear()

    # -- jobs --------------------------------------------------------------------------------------------------

    def create_job(self, body: dict) -> str:
        resp = self.client.post("/api/v1/jobs", json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"job not created: {resp.status_code} {resp.get_data(as_text=True)}")
        return resp.get_json()["result"]["id"]

    def wait_job(self, job_id: str, timeout: float = 1800.0) -> dict:
        """Poll the job hash in Redis every 25 ms until it ends; return the public job from the API."""
        key = f"{self.prefix}job:{job_id}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.redis.hget(key, "status")
            if status in (b"completed", b"failed", b"cancelled"):
                return self.client.get(f"/api/v1/jobs/{job_id}").get_json()["result"]
            time.sleep(0.025)  # polling interval (the double shares this process: poll lightly)
        raise TimeoutError(f"job {job_id} did not end within {timeout} s")

    def run_job(self, body: dict) -> tuple[float, dict, dict[str, float]]:
        """Create a job and wait for it: (seconds from creation to completion, job, step seconds).

        Step seconds come from the worker's log: from a step's start to the next step's start (so they
        include one hand-over between steps), the last step to "job completed".
        """
        started = time.monotonic()
        job_id = self.create_job(body)
        job = self.wait_job(job_id)
        elapsed = time.monotonic() - started
        if job["status"] != "completed":
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
        times = sorted(self.step_times(job_id).items(), key=lambda item: item[1])
        steps = {name: later - at for (name, at), (_, later) in zip(times, times[1:], strict=False)}
        return elapsed, job, steps

    # -- clean-up ----------------------------------------------------------------------------------------------

    def delete_own_keys(self) -> int:
        deleted = 0
        batch: list[bytes] = []
        for key in self.redis.scan_iter(match=f"{self.prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += self.redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += self.redis.unlink(*batch)
        return deleted

    def close(self) -> None:
        self.stop_workers()
        if self.double is not None:
            self.double.stop()
        if self.moto is not None:
            self.moto.stop()
        self.delete_own_keys()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def default_storage_dir(needed: int) -> Path | None:
    """/dev/shm when it has room for ``needed`` bytes: writes to RAM take the disk (shared with whatever else
    runs on the machine) out of the comparison, leaving the software path of QBM and of the tool."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > needed + 2 * GiB:
            return shm
    except OSError:
        pass
    return None


@contextmanager
def bench(redis_url: str = DEFAULT_REDIS_URL, storage_dir: Path | None = None, **real_qdrant: Any) -> Iterator[Bench]:
    """A :class:`Bench`; ``real_qdrant`` (``qdrant_url``, ``qdrant_api_key``, ``qdrant_peers``) replaces the double."""
    b = Bench(redis_url=redis_url, storage_dir=storage_dir, **real_qdrant)
    try:
        yield b
    finally:
        b.close()


class PeakRss:
    """Samples the RSS of every process in a tree every 20 ms; ``peaks`` maps pid -> highest RSS seen."""

    def __init__(self, root_pid: int, interval: float = 0.02) -> None:
        self.root_pid, self.interval = root_pid, interval
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set() and self.sample():
            self._stop.wait(self.interval)

    def sample(self) -> bool:
        """Take one sample now; False once the tree is gone."""
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        for p in procs:
            try:
                self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        return True

    def worker_peak(self) -> int:
        """The highest RSS of a single process of the tree (a Dramatiq worker process, in practice)."""
        return max(self.peaks.values(), default=0)


def timed(cmd: list[str], **kwargs: Any) -> float:
    """Run a command to completion; its wall time in seconds. Fails loudly on a non-zero exit."""
    started = time.monotonic()
    subprocess.run(cmd, check=True, **kwargs)
    return time.monotonic() - started
