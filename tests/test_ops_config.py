"""The deployment variables: Redis Sentinel, worker metrics and the default S3 backend, validated at start."""

from __future__ import annotations

import pytest

from shared.adapters.redis_conn import describe
from shared.runtime.config import ConfigError, load_config

FERNET = "A" * 43 + "="


def test_sentinels_and_master_name() -> None:
    config = load_config({"QBM_REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
                          "QBM_REDIS_MASTER_NAME": "qbm", "QBM_REDIS_URL": "redis://:pw-1234@ignored/2"})
    assert config.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381))
    assert config.redis_master_name == "qbm" and config.redis_url_explicit
    where = describe(config)
    assert "sentinel-b:26380" in where and "'qbm'" in where and "pw-1234" not in where
    assert "pw-1234" in config.secrets
    assert load_config({}).redis_sentinels == () and not load_config({}).redis_url_explicit
    for bad in ("sentinel-a", "host:notaport", ":26379"):
        with pytest.raises(ConfigError, match="QBM_REDIS_SENTINELS"):
            load_config({"QBM_REDIS_SENTINELS": bad})


def test_worker_metrics_port_is_opt_in() -> None:
    assert load_config({}).worker_metrics_port is None
    config = load_config({"QBM_WORKER_METRICS_PORT": "9191"})
    assert (config.worker_metrics_port, config.worker_metrics_host) == (9191, "0.0.0.0")
    with pytest.raises(ConfigError, match="QBM_WORKER_METRICS_PORT"):
        load_config({"QBM_WORKER_METRICS_PORT": "99999"})


def test_default_s3_settings() -> None:
    env = {"QBM_DEFAULT_S3_ENDPOINT": "http://minio:9000/", "QBM_DEFAULT_S3_BUCKET": "qbm-backups",
           "QBM_DEFAULT_S3_ACCESS_KEY": "writer", "QBM_DEFAULT_S3_SECRET_KEY": "s3-secret-9876",
           "QBM_SECRET_KEY": FERNET}
    config = load_config(env)
    assert (config.default_s3_endpoint, config.default_s3_bucket) == ("http://minio:9000", "qbm-backups")
    assert "s3-secret-9876" not in repr(config)
    assert "s3-secret-9876" in config.secrets
    with pytest.raises(ConfigError, match="set together"):
        load_config({"QBM_DEFAULT_S3_BUCKET": "qbm-backups"})
    with pytest.raises(ConfigError, match="QBM_DEFAULT_S3_ENDPOINT"):
        load_config({**env, "QBM_DEFAULT_S3_ENDPOINT": "minio:9000"})
    with pytest.raises(ConfigError, match="needs QBM_SECRET_KEY"):
        load_config({k: v for k, v in env.items() if k != "QBM_SECRET_KEY"})


def test_qdrant_read_timeout_and_reaper_grace() -> None:
    """Both shorten how long a fault takes to surface; a typo must stop the process, not mean "default"."""
    defaults = load_config({})
    assert (defaults.qdrant_read_timeout, defaults.reaper_grace_seconds) == (60, 120)
    config = load_config({"QBM_QDRANT_READ_TIMEOUT": "5", "QBM_REAPER_GRACE_SECONDS": "30"})
    assert (config.qdrant_read_timeout, config.reaper_grace_seconds) == (5, 30)
    for name, bad in (("QBM_QDRANT_READ_TIMEOUT", "0"), ("QBM_QDRANT_READ_TIMEOUT", "1.5s"),
                      ("QBM_REAPER_GRACE_SECONDS", "1"), ("QBM_REAPER_GRACE_SECONDS", "two minutes")):
        with pytest.raises(ConfigError, match=name):
            load_config({name: bad})
