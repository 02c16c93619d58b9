"""Configuration from environment variables, validated once at start.

Every process (API, worker, scheduler) reads the same variables through :func:`load_config`, so one
deployment is configured in one place. A wrong value fails fast with :class:`ConfigError`, whose message
names the variable, instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def redacted(self) -> dict[str, object]:
        """The configuration as a dict that is safe to print or log: secrets are replaced."""
        return {
            "redis_url": _redact_url(self.redis_url),
            "qdrant_url": self.qdrant_url,
            "qdrant_api_key": "***" if self.qdrant_api_key else None,
            "api_host": self.api_host,
            "api_port": self.api_port,
            "api_keys": f"{len(self.api_keys)} key(s)" if self.api_keys else "none (auth disabled)",
            "data_dir": str(self.data_dir),
            "storage_roots": [str(p) for p in self.storage_roots],
            "key_prefix": self.key_prefix,
            "log_level": self.log_level,
        }


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
        redis_url_explicit=redis_url is not None,
        qdrant_url=_check_http_url("QBM_QDRANT_URL", get("QBM_QDRANT_URL") or "http://127.0.0.1:6333"),
        qdrant_api_key=get("QBM_QDRANT_API_KEY"),
        api_host=get("QBM_API_HOST") or "127.0.0.1",
        api_port=_check_port("QBM_API_PORT", get("QBM_API_PORT") or "8080"),
        api_keys=api_keys,
        data_dir=data_dir,
        storage_roots=roots,
        key_prefix=prefix,
        log_level=log_level,
    )
