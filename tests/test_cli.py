"""The ``qbm`` command as a user runs it: real processes, real Redis, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis
import requests

from qbm.bootstrap import resolve_redis
from shared.runtime.config import Config, ConfigError, load_config
from tests.waiting import wait_until as wait_for

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qbm_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update(extra)
    return env


def run_qbm(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qbm.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    config = load_config({})
    assert config.redis_url == "redis://127.0.0.1:6379/0" and not config.redis_url_explicit
    assert config.qdrant_url == "http://127.0.0.1:6333"
    assert (config.api_host, config.api_port, config.key_prefix) == ("127.0.0.1", 8080, "qbm:")
    assert config.storage_roots == (config.data_dir,) and config.api_keys == ()
    config = load_config({"QBM_API_KEYS": " a1 , ,b2", "QBM_STORAGE_ROOTS": f"{tmp_path}:/srv/x",
                          "QBM_QDRANT_URL": "https://q.example:6333/"})
    assert config.api_keys == ("a1", "b2") and config.auth_enabled
    assert config.storage_roots == (tmp_path.resolve(), Path("/srv/x"))
    assert config.qdrant_url == "https://q.example:6333"
    assert "a1" not in repr(config)
    bad = [("QBM_API_PORT", "eighty"), ("QBM_API_PORT", "70000"), ("QBM_QDRANT_URL", "ftp://x"),
           ("QBM_REDIS_URL", "http://x"), ("QBM_LOG_LEVEL", "LOUD")]
    for name, value in bad:
        with pytest.raises(ConfigError, match=name):
            load_config({name: value})


@pytest.mark.parametrize("command", ["api", "worker", "scheduler", "up"])
def test_unreachable_redis_exits_with_a_clear_message(command: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_qbm(command, env=qbm_env(QBM_REDIS_URL=url))
    assert result.returncode == 3
    assert f"127.0.0.1:{url.split(':')[2]}" in result.stderr and "not reachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_configuration_exits_with_the_variable_named() -> None:
    result = run_qbm("api", env=qbm_env(QBM_API_PORT="not-a-port"))
    assert result.returncode == 2
    assert "QBM_API_PORT" in result.stderr and "Traceback" not in result.stderr


def test_embedded_redis_starts_when_none_is_configured(tmp_path: Path) -> None:
    config = Config(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_url_explicit=False, data_dir=tmp_path)
    resolved, embedded = resolve_redis(config, allow_embedded=True)
    assert embedded is not None
    try:
        client = redis.Redis.from_url(resolved.redis_url)
        client.set("qbm:probe", "1")
        assert client.get("qbm:probe") == b"1"
        assert str(tmp_path) in embedded.socket or (tmp_path / "redis").exists()
    finally:
        embedded.stop()
    # An explicitly configured Redis that does not answer is never replaced.
    with pytest.raises(Exception, match="not reachable"):
        resolve_redis(Config(redis_url=config.redis_url, redis_url_explicit=True, data_dir=tmp_path),
                      allow_embedded=True)


def test_qbm_up_starts_everything_and_stops_cleanly(tmp_path: Path, redis_url: str, key_prefix: str,
                                                    qdrant) -> None:  # noqa: ANN001
    port = free_port()
    env = qbm_env(QBM_REDIS_URL=redis_url, QBM_KEY_PREFIX=key_prefix, QBM_API_PORT=str(port),
                  QBM_DATA_DIR=str(tmp_path / "data"), QBM_QDRANT_URL=qdrant.url)
    proc = subprocess.Popen([sys.executable, "-m", "qbm.cli", "up"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def api_up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting its workers
                return False

        wait_for(api_up, 60, "the API to answer /healthz")
        # First start registered the default local backend under QBM_DATA_DIR/backups.
        storages = requests.get(f"{base}/api/v1/storage", timeout=5).json()["result"]
        assert [(s["type"], s["path"], s["is_default"]) for s in storages] == [
            ("local", str((tmp_path / "data" / "backups").resolve()), True)]
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        commands = " ".join(" ".join(c.cmdline()) for c in children)
        assert "qbm.cli api" in commands and "qbm.cli worker" in commands
        assert "qbm.cli scheduler" in commands and "workers.main workers.process" in commands
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(f"qbm up did not stop within 60 s:\n{output[-3000:]}") from None
    assert proc.returncode == 0, output[-3000:]
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is a JSON object
    assert any(line["level"] == "WARNING" and "QBM_API_KEYS is empty" in line["msg"] for line in lines)
    assert any(f"API listening on http://127.0.0.1:{port} (gunicorn" in line["msg"] for line in lines)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=1)
