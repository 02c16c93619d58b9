"""Configuration from environment variables, validated once at start.

Every process (API, worker, scheduler) reads the same variables through :func:`load_config`, so one
deployment is configured in one place. A wrong value fails fast with :class:`ConfigError`, whose message
names the variable, instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    redis_url: str = DEFAULT_REDIS_URL
    #: True when QBM_REDIS_URL was given explicitly (then an unreachable Redis is an error, never replaced
    #: by the embedded one).
    redis_url_explicit: bool = False
    qdrant_url: str = "http://127.0.0.1:6333"
    qdrant_api_key: str | None = field(default=None, repr=False)
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    data_dir: Path = Path("qbm-data").resolve()
    storage_roots: tuple[Path, ...] = ()
    key_prefix: str = "qbm:"
    log_level: str = "INFO"
    #: A scheduled run missed while no scheduler was up still fires (once) at start if it is at most this old.
    misfire_grace_seconds: int = 3600
    #: How long the scheduler leader's Redis lease lives without renewal: a dead leader is replaced after it.
    scheduler_lease_seconds: int = 15
    #: The longest one read from Qdrant may wait (for a snapshot download: the longest it may stall) before the
    #: call fails; snapshot creation, deletion and recovery calls have no read timeout.
    qdrant_read_timeout: int = 60
    #: A pending or running job with no sign of life (a worker's heartbeat or a queued message) for this long is
    #: re-enqueued, or failed once re-enqueued too often, by the scheduler leader's reaper.
    reaper_grace_seconds: int = 120
    #: Redis Sentinel addresses; when set, the master named ``redis_master_name`` is found through them and
    #: QBM_REDIS_URL only contributes the password and database number.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master_name: str = "mymaster"
    #: Where each ``qbm worker`` serves Dramatiq's own Prometheus metrics (None: not served).
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "0.0.0.0"
    #: An S3 bucket registered as the default storage backend at first start (instead of local disk).
    default_s3_endpoint: str | None = None
    default_s3_bucket: str | None = None
    default_s3_region: str | None = None
    default_s3_access_key: str | None = None
    default_s3_secret_key: str | None = field(default=None, repr=False)
    #: Fernet keys (QBM_SECRET_KEY) for the secrets kept in Redis: the first encrypts, every one decrypts.
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    #: ``host`` / ``host:port`` entries PUT .../snapshots/recover may point Qdrant at (QBM_RECOVER_ALLOWED_HOSTS);
    #: None: Qdrant's own address and the S3 endpoints of the registered storage backends.
    recover_allowed_hosts: tuple[str, ...] | None = None
    #: QBM_QDRANT_PEERS: ``(peer, REST URL)`` pairs, ``peer`` a Qdrant peer id or its p2p URI; peers not named
    #: here are reached at their p2p URI's host with the REST port of QBM_QDRANT_URL.
    qdrant_peers: tuple[tuple[str, str], ...] = ()
    #: How many shard streams one Qdrant peer serves at a time for backup sets, over every worker.
    peer_stream_limit: int = 2
    #: How long a backup set waits for a collection's shard transfers or resharding to end before failing.
    set_wait_seconds: int = 600

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value this configuration holds, for the log redaction filter."""
        password = urlparse(self.redis_url).password
        values = (*self.api_keys, self.qdrant_api_key, self.default_s3_secret_key, password, *self.secret_keys)
        return tuple(v for v in values if v)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def _redact_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


def _check_http_url(name: str, value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, got {value!r}")
    return value.rstrip("/")


def _check_redis_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"QBM_REDIS_URL must start with redis://, rediss:// or unix://, got {value!r}")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigError(f"QBM_REDIS_URL has no host: {value!r}")
    return value


def _check_port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _check_seconds(name: str, value: str, *, minimum: int) -> int:
    return _check_count(name, value, minimum=minimum, unit=" of seconds")


def _check_count(name: str, value: str, *, minimum: int, unit: str = "") -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number{unit}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {number}")
    return number


def _check_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (IPv6 hosts in brackets) into (host, port) pairs."""
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host:
            raise ConfigError(f"QBM_REDIS_SENTINELS entries must be host:port, got {item!r}")
        pairs.append((host, _check_port("QBM_REDIS_SENTINELS", port)))
    return tuple(pairs)


def _deployment_settings(get: Callable[[str], str | None]) -> dict[str, Any]:
    """Sentinel, worker metrics and default-S3 variables (kept together: they only matter to deployments)."""
    endpoint, bucket = get("QBM_DEFAULT_S3_ENDPOINT"), get("QBM_DEFAULT_S3_BUCKET")
    if bool(endpoint) != bool(bucket):
        raise ConfigError("QBM_DEFAULT_S3_ENDPOINT and QBM_DEFAULT_S3_BUCKET must be set together")
    if bucket and get("QBM_DEFAULT_S3_SECRET_KEY") and not get("QBM_SECRET_KEY"):
        raise ConfigError("QBM_DEFAULT_S3_SECRET_KEY needs QBM_SECRET_KEY: S3 secrets are stored encrypted")
    metrics_port = get("QBM_WORKER_METRICS_PORT")
    return {
        "redis_sentinels": _check_sentinels(get("QBM_REDIS_SENTINELS") or ""),
        "redis_master_name": get("QBM_REDIS_MASTER_NAME") or "mymaster",
        "worker_metrics_port": _check_port("QBM_WORKER_METRICS_PORT", metrics_port) if metrics_port else None,
        "worker_metrics_host": get("QBM_WORKER_METRICS_HOST") or "0.0.0.0",
        "default_s3_endpoint": _check_http_url("QBM_DEFAULT_S3_ENDPOINT", endpoint) if endpoint else None,
        "default_s3_bucket": bucket,
        "default_s3_region": get("QBM_DEFAULT_S3_REGION"),
        "default_s3_access_key": get("QBM_DEFAULT_S3_ACCESS_KEY"),
        "default_s3_secret_key": get("QBM_DEFAULT_S3_SECRET_KEY"),
    }


def _security_settings(get: Callable[[str], str | None]) -> dict[str, Any]:
    """QBM_SECRET_KEY (comma-separated Fernet keys) and QBM_RECOVER_ALLOWED_HOSTS (comma-separated host or
    host:port), checked here so a typo stops the process at start instead of failing the first S3 save."""
    from shared.adapters.secret_box import GENERATE_HINT, is_fernet_key
    from shared.intake.recover_location import parse_host_entry

    keys = tuple(k.strip() for k in (get("QBM_SECRET_KEY") or "").split(",") if k.strip())
    for position, key in enumerate(keys, 1):
        if not is_fernet_key(key):
            raise ConfigError(f"QBM_SECRET_KEY: key {position} of {len(keys)} is not a Fernet key (32 bytes in "
                              f"URL-safe base64, 44 characters); {GENERATE_HINT}")
    hosts_raw = get("QBM_RECOVER_ALLOWED_HOSTS")
    hosts: tuple[str, ...] | None = None
    if hosts_raw is not None:
        try:
            hosts = tuple(str(parse_host_entry(h)) for h in hosts_raw.split(",") if h.strip())
        except ValueError as exc:
            raise ConfigError(f"QBM_RECOVER_ALLOWED_HOSTS entries must be host or host:port: {exc}") from None
    return {"secret_keys": keys, "recover_allowed_hosts": hosts}


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the ``QBM_*`` variables (from ``os.environ`` unless ``env`` is given)."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    redis_url = get("QBM_REDIS_URL")
    data_dir = Path(get("QBM_DATA_DIR") or "qbm-data").expanduser().resolve()
    roots_raw = get("QBM_STORAGE_ROOTS")
    if roots_raw:
        roots = tuple(Path(p).expanduser().resolve() for p in roots_raw.split(":") if p.strip())
    else:
        roots = (data_dir,)

    api_keys = tuple(k.strip() for k in (get("QBM_API_KEYS") or "").split(",") if k.strip())
    prefix = get("QBM_KEY_PREFIX") or "qbm:"
    if any(c.isspace() for c in prefix):
        raise ConfigError(f"QBM_KEY_PREFIX must not contain white space, got {prefix!r}")
    log_level = (get("QBM_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"QBM_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")

    return Config(
        redis_url=_check_redis_url(redis_url) if redis_url else DEFAULT_REDIS_URL,
        redis_url_explicit=redis_url is not None or bool(get("QBM_REDIS_SENTINELS")),
        qdrant_url=_check_http_url("QBM_QDRANT_URL", get("QBM_QDRANT_URL") or "http://127.0.0.1:6333"),
        qdrant_api_key=get("QBM_QDRANT_API_KEY"),
        api_host=get("QBM_API_HOST") or "127.0.0.1",
        api_port=_check_port("QBM_API_PORT", get("QBM_API_PORT") or "8080"),
        api_keys=api_keys,
        data_dir=data_dir,
        storage_roots=roots,
        key_prefix=prefix,
        log_level=log_level,
        misfire_grace_seconds=_check_seconds("QBM_MISFIRE_GRACE", get("QBM_MISFIRE_GRACE") or "3600", minimum=0),
        scheduler_lease_seconds=_check_seconds(
            "QBM_SCHEDULER_LEASE_SECONDS", get("QBM_SCHEDULER_LEASE_SECONDS") or "15", minimum=2
        ),
        qdrant_read_timeout=_check_seconds(
            "QBM_QDRANT_READ_TIMEOUT", get("QBM_QDRANT_READ_TIMEOUT") or "60", minimum=1
        ),
        reaper_grace_seconds=_check_seconds(
            "QBM_REAPER_GRACE_SECONDS", get("QBM_REAPER_GRACE_SECONDS") or "120", minimum=2
        ),
        qdrant_peers=_check_peers(get("QBM_QDRANT_PEERS")),
        peer_stream_limit=_check_count("QBM_PEER_STREAMS", get("QBM_PEER_STREAMS") or "2", minimum=1),
        set_wait_seconds=_check_seconds("QBM_SET_WAIT_SECONDS", get("QBM_SET_WAIT_SECONDS") or "600", minimum=0),
        **_deployment_settings(get),
        **_security_settings(get),
    )


def _check_peers(raw: str | None) -> tuple[tuple[str, str], ...]:
    """``QBM_QDRANT_PEERS``: comma-separated ``peer=REST URL``, ``peer`` a peer id or a p2p URI."""
    pairs = []
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        peer, sep, url = entry.rpartition("=")
        peer, url = peer.strip(), url.strip()
        if not sep or not peer:
            raise ConfigError(f"QBM_QDRANT_PEERS entries are peer=REST URL (peer id or p2p URI), got {entry!r}")
        pairs.append((peer.rstrip("/"), _check_http_url("QBM_QDRANT_PEERS", url)))
    return tuple(pairs)
