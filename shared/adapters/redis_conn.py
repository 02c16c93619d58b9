"""One way to open Redis, so every process talks to the same server with the same options.

With ``QBM_REDIS_SENTINELS`` set, :func:`from_config` returns a client whose connections ask the sentinels
where the master is, so the job store, the broker and the scheduler lease all follow a failover. Commands
are retried for about ten seconds on connection errors (including "the master you talk to became a
replica"), which covers a Sentinel failover without failing the step that happened to write at that moment.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from shared.runtime.config import Config

#: 0.1 + 0.2 + 0.4 + 0.8 + 8 x 1.0 s: a bit over ten seconds of retries, longer than a Sentinel failover takes
#: with down-after-milliseconds of a few seconds.
FAILOVER_RETRIES = 12


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the message says where we tried (without any password)."""


def connect(url: str, *, check: bool = False) -> redis.Redis:
    """A client for ``url`` with short socket timeouts and health checks.

    Responses are bytes (``decode_responses=False``) because Dramatiq shares the connection style; the
    stores decode what they read. With ``check=True`` the server is pinged at once and an unreachable
    server raises :class:`RedisUnavailable`.
    """
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=3,
        socket_timeout=30,
        health_check_interval=30,
        retry_on_timeout=True,
    )
    if check:
        ping(client, url)
    return client


def ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {_safe(url)} is not reachable: {exc}") from exc


def from_config(config: Config, *, check: bool = False) -> redis.Redis:
    """The client every process should use: direct from QBM_REDIS_URL, or through Sentinel when configured."""
    if not config.redis_sentinels:
        return connect(config.redis_url, check=check)
    client = connect_sentinel(config.redis_sentinels, config.redis_master_name, config.redis_url)
    if check:
        ping(client, describe(config))
    return client


def connect_sentinel(sentinels: tuple[tuple[str, int], ...], master_name: str, url: str) -> redis.Redis:
    """A client for the master Sentinel currently names; password and DB number come from ``url``."""
    options: dict[str, Any] = parse_url(url)
    for name in ("host", "port", "path", "unix_socket_path", "connection_class"):
        options.pop(name, None)
    if url.startswith("rediss://"):
        options["ssl"] = True
    sentinel = Sentinel(list(sentinels), socket_connect_timeout=3, socket_timeout=3)
    return sentinel.master_for(
        master_name,
        redis_class=redis.Redis,
        socket_connect_timeout=3,
        socket_timeout=30,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), FAILOVER_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError],
        **options,
    )


def describe(config: Config) -> str:
    """Where Redis is, for messages: the URL without its password, or the sentinels and master name."""
    if config.redis_sentinels:
        where = ",".join(f"{host}:{port}" for host, port in config.redis_sentinels)
        return f"master {config.redis_master_name!r} via sentinels {where}"
    return _safe(config.redis_url)


def _safe(url: str) -> str:
    from shared.runtime.config import _redact_url

    return _redact_url(url)
