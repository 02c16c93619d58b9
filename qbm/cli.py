"""The ``qbm`` command: run the API, the workers, the scheduler, or all three with ``qbm up``.

Each server subcommand validates the configuration and reaches Redis before it starts, and exits with
status 2 (bad configuration) or 3 (Redis unreachable) and a one-line reason, so a misconfigured
deployment fails at once and visibly instead of looping on connection errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.adapters.redis_conn import RedisUnavailable, describe, from_config
from shared.runtime.config import Config, ConfigError, load_config

EXIT_CONFIG = 2
EXIT_REDIS = 3


log = logging.getLogger("qbm")


def _fail(code: int, message: str) -> int:
    log.error(message)
    return code


def _say(message: str) -> None:
    """Tell the operator something, as a log line like every other (JSON on stderr)."""
    if message.startswith("WARNING: "):
        log.warning(message.removeprefix("WARNING: "))
    else:
        log.info(message)


def _setup(config: Config) -> None:
    from shared.runtime.logs import setup_logging

    setup_logging(config.log_level, config.secrets)


def _check_redis(config: Config) -> None:
    from_config(config, check=True)


# --- qbm api -------------------------------------------------------------------------------------------


def run_api(config: Config, *, workers: int, threads: int) -> int:
    from qbm.bootstrap import ensure_default_storage

    ensure_default_storage(config)
    if not config.auth_enabled:
        _say("WARNING: QBM_API_KEYS is empty: the API accepts requests without authentication")
    bind = f"{config.api_host}:{config.api_port}"
    try:
        import gunicorn.app.base  # noqa: F401
    except ImportError:
        _say(f"WARNING: gunicorn is not installed; serving on http://{bind} with Flask's development server")
        from api.app import create_app

        create_app(config).run(host=config.api_host, port=config.api_port, threaded=True)
        return 0
    _say(f"API listening on http://{bind} (gunicorn, {workers} worker(s) x {threads} thread(s))")
    from api.server import serve

    serve(config, workers=workers, threads=threads)
    return 0


# --- qbm worker ----------------------------------------------------------------------------------------

WORKER_QUEUES = ("backups", "restores")


def worker_command(processes: int, threads: int, queues: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "workers.main", "workers.process",
        "--processes", str(processes), "--threads", str(threads),
        "--queues", *queues,
        "--worker-shutdown-timeout", "30000",
        "--skip-logging",
    ]


def run_worker(config: Config, *, processes: int, threads: int, queues: Sequence[str]) -> int:
    """Run Dramatiq's worker master under a supervisor loop.

    Dramatiq's master stops every child and exits when one child dies (Dramatiq 2.x), which would leave a
    machine with no workers; we restart it, and stop for good only on SIGTERM/SIGINT.
    """
    env = dict(os.environ, dramatiq_queue_prefetch="1", QBM_REDIS_URL=config.redis_url)
    # An idle Dramatiq consumer polls Redis with a backoff capped at worker_timeout (default 1000 ms), and a
    # consumer whose thread is busy backs off the same way: every hand-over between a job's steps waited up
    # to a second. 200 ms caps that at a fifth, at the price of more frequent (cheap) idle polls.
    env.setdefault("dramatiq_worker_timeout", "200")
    cmd = worker_command(processes, threads, queues)
    _say(f"worker consuming queues {', '.join(queues)} on {describe(config)} "
         f"({processes} process(es) x {threads} thread(s))")
    supervisor = Supervisor()
    supervisor.add("worker", cmd, env)
    return supervisor.run()


# --- qbm scheduler ------------------------------------------------------------------------------------


def run_scheduler(config: Config) -> int:
    from scheduler.main import run

    _say(f"scheduler using {describe(config)}")
    return run(config)


# --- qbm rotate-secrets ------------------------------------------------------------------------------


def run_rotate_secrets(config: Config) -> int:
    """Re-encrypt every stored S3 secret with the first QBM_SECRET_KEY (step 3 of a key rotation; it also
    encrypts secrets an older QBM stored in the clear)."""
    from shared.adapters.secret_box import SecretKeyError
    from shared.records.storage_configs import StorageConfigStore

    if not config.secret_keys:
        return _fail(EXIT_CONFIG, "QBM_SECRET_KEY is not set: there is no key to encrypt with")
    store = StorageConfigStore(from_config(config), config.key_prefix, config.secret_keys)
    try:
        rewritten, current = store.rotate_secrets()
    except SecretKeyError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    _say(f"re-encrypted {rewritten} stored secret(s) with the first QBM_SECRET_KEY; {current} already were")
    return 0


# --- qbm up --------------------------------------------------------------------------------------------


def run_up(config: Config, *, processes: int, threads: int) -> int:
    from qbm.bootstrap import resolve_redis

    try:
        config, embedded = resolve_redis(config, allow_embedded=True)
    except RedisUnavailable as exc:
        return _fail(EXIT_REDIS, str(exc))
    if embedded:
        _say(f"no Redis answered on 127.0.0.1:6379 and QBM_REDIS_URL is not set: started an embedded "
             f"Redis at {embedded.socket} (data kept under {config.data_dir / 'redis'})")
    env = dict(os.environ, QBM_REDIS_URL=config.redis_url, QBM_DATA_DIR=str(config.data_dir))
    me = [sys.executable, "-m", "qbm.cli"]
    supervisor = Supervisor()
    supervisor.add("api", [*me, "api"], env)
    supervisor.add("worker", [*me, "worker", "--processes", str(processes), "--threads", str(threads)], env)
    supervisor.add("scheduler", [*me, "scheduler"], env)
    _say(f"starting API on http://{config.api_host}:{config.api_port}, workers and scheduler; "
         "Ctrl-C stops them all")
    try:
        return supervisor.run()
    finally:
        if embedded:
            embedded.stop()


@dataclass
class _Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Start child processes, restart one that dies, stop them all together on SIGTERM/SIGINT.

    A child that dies more than 5 times in a minute is taken to be misconfigured: everything stops and
    the supervisor exits non-zero, so the failure is visible rather than a silent restart loop.
    """

    MAX_RESTARTS = 5
    WINDOW = 60.0

    def __init__(self) -> None:
        self.children: list[_Child] = []
        self._stopping = False

    def add(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.children.append(_Child(name, cmd, env))

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(child.cmd, env=child.env)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            code = self._watch()
        finally:
            self._stop_all()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    def _watch(self) -> int:
        while not self._stopping:
            for child in self.children:
                assert child.proc is not None
                rc = child.proc.poll()
                if rc is None:
                    continue
                if child.name != "worker" and rc in (EXIT_CONFIG, EXIT_REDIS):
                    _say(f"{child.name} exited with status {rc}; stopping")
                    return rc
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < self.WINDOW] + [now]
                if len(child.restarts) > self.MAX_RESTARTS:
                    _say(f"{child.name} died {len(child.restarts)} times within a minute; stopping")
                    return 1
                _say(f"{child.name} exited with status {rc}; restarting it")
                self._start(child)
            time.sleep(0.2)  # polling interval of the supervisor loop, not synchronisation
        return 0

    def _stop_all(self, timeout: float = 40.0) -> None:
        live = [c.proc for c in self.children if c.proc and c.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- entry point -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qbm", description="Qdrant Backup Manager")
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve the REST API")
    api.add_argument("--workers", type=int, default=int(os.environ.get("QBM_API_WORKERS", "2")))
    api.add_argument("--threads", type=int, default=int(os.environ.get("QBM_API_THREADS", "8")))
    worker = sub.add_parser("worker", help="run backup/restore workers (Dramatiq)")
    worker.add_argument("--processes", type=int, default=int(os.environ.get("QBM_WORKER_PROCESSES", "2")))
    worker.add_argument("--threads", type=int, default=int(os.environ.get("QBM_WORKER_THREADS", "2")))
    worker.add_argument("--queues", nargs="+", default=list(WORKER_QUEUES), choices=WORKER_QUEUES)
    sub.add_parser("scheduler", help="run the scheduler (recurring backups, retention)")
    sub.add_parser("rotate-secrets", help="re-encrypt stored S3 secrets with the first key in QBM_SECRET_KEY")
    up = sub.add_parser("up", help="API + workers + scheduler on this machine (embedded Redis if none)")
    up.add_argument("--processes", type=int, default=int(os.environ.get("QBM_WORKER_PROCESSES", "1")))
    up.add_argument("--threads", type=int, default=int(os.environ.get("QBM_WORKER_THREADS", "2")))
    from qbm import client as client_cli

    client_cli.add_commands(sub)  # backup, backups, restore, jobs, schedules, storage: clients of a running API
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from qbm import client as client_cli

    if args.command in client_cli.CLIENT_COMMANDS:
        return client_cli.run(args)  # needs only QBM_API_URL / QBM_API_KEY, not the server's configuration
    try:
        config = load_config()
    except ConfigError as exc:
        _setup(Config())  # the line still comes out as JSON, at the default level
        return _fail(EXIT_CONFIG, f"configuration error: {exc}")
    _setup(config)
    for value, name in ((getattr(args, "workers", 1), "--workers"), (getattr(args, "threads", 1), "--threads"),
                        (getattr(args, "processes", 1), "--processes")):
        if value < 1:
            return _fail(EXIT_CONFIG, f"{name} must be at least 1")
    if args.command == "up":
        return run_up(config, processes=args.processes, threads=args.threads)
    try:
        _check_redis(config)
    except RedisUnavailable as exc:
        return _fail(EXIT_REDIS, str(exc))
    if args.command == "api":
        return run_api(config, workers=args.workers, threads=args.threads)
    if args.command == "worker":
        return run_worker(config, processes=args.processes, threads=args.threads, queues=args.queues)
    if args.command == "rotate-secrets":
        return run_rotate_secrets(config)
    return run_scheduler(config)


if __name__ == "__main__":
    sys.exit(main())
