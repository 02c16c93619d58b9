"""Container health checks: ``python -m qbm.healthcheck api|worker|scheduler`` exits 0 when healthy.

Docker runs these inside each container (compose/docker-compose.yml), where neither curl nor a shell
script is a given, and ``depends_on: condition: service_healthy`` waits on them. They check what would make
the process useless, each in under a few seconds:

* api: the API answers /healthz on QBM_API_PORT (liveness only: a Qdrant outage must not restart the API).
* worker: Dramatiq's metrics server answers on QBM_WORKER_METRICS_PORT -- it runs beside the worker master,
  so it proves the master is up -- else that Redis (the queue) answers.
* scheduler: Redis answers (the lease and the schedules live there; without it nothing can fire).
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence

from shared.adapters.redis_conn import RedisUnavailable, from_config
from shared.runtime.config import Config, ConfigError, load_config

TIMEOUT = 3.0
ROLES = ("api", "worker", "scheduler")


def _local(host: str) -> str:
    """Where to reach a server bound to ``host`` from inside its own container."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _http_ok(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - our own local URL
            return response.status == 200, f"{url} answered {response.status}"
    except OSError as exc:
        return False, f"{url}: {exc}"


def _redis_ok(config: Config) -> tuple[bool, str]:
    try:
        from_config(config, check=True)
    except RedisUnavailable as exc:
        return False, str(exc)
    return True, "Redis answers"


def check(role: str, config: Config) -> tuple[bool, str]:
    """Whether the ``role`` process configured by ``config`` is healthy, and why (for `docker inspect`)."""
    if role == "api":
        return _http_ok(f"http://{_local(config.api_host)}:{config.api_port}/healthz")
    if role == "worker" and config.worker_metrics_port:
        return _http_ok(f"http://{_local(config.worker_metrics_host)}:{config.worker_metrics_port}/")
    return _redis_ok(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qbm.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=ROLES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"unhealthy: configuration error: {exc}")
        return 1
    ok, why = check(args.role, config)
    print(("healthy: " if ok else "unhealthy: ") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
