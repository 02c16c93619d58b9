"""One way to open Redis, so every process talks to the same server with the same options."""

from __future__ import annotations

import redis

from shared.config import Config


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
    return connect(config.redis_url, check=check)


def _safe(url: str) -> str:
    from shared.config import _redact_url

    return _redact_url(url)
