"""Shared fixtures: real Redis (own DB and key prefix), the Qdrant double, moto's S3 server.

Nothing here mocks our own code: tests talk to a real Redis server, a real HTTP server standing in for
Qdrant, and moto's real S3 HTTP server (signatures checked, see tests/moto_s3.py) driven through ``minio``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from tests.moto_s3 import Moto, S3Server

TEST_REDIS_URL = os.environ.get("QBM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"tests need a Redis server at {TEST_REDIS_URL} (set QBM_TEST_REDIS_URL): {exc}")
    return TEST_REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A prefix unique to this test; every key under it is deleted afterwards (and only those)."""
    prefix = f"qbmtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


@pytest.fixture(scope="session")
def secret_key() -> str:
    """A QBM_SECRET_KEY (Fernet key) for the tests' configs: S3 secrets are stored encrypted with it."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def qdrant(tmp_path: Path) -> Iterator[object]:
    from tests.qdrant_double import QdrantDouble

    double = QdrantDouble(tmp_path / "qdrant")
    double.start()
    yield double
    double.stop()


@pytest.fixture
def qdrant_cluster(tmp_path: Path) -> Iterator[object]:
    """A started 3-peer DoubleCluster (peers 101, 102, 103); tests/real_qdrant overrides it with real Qdrant."""
    from tests.qdrant_double import DoubleCluster

    cluster = DoubleCluster(tmp_path / "qdrant-cluster", peers=3)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    from tests import moto_s3

    running = moto_s3.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def s3_server(moto: Moto) -> S3Server:
    """moto's S3 with signatures checked, as an IAM user with an S3-only policy; buckets in eu-central-1."""
    return moto.s3


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for this test."""
    name = f"qbm-test-{uuid.uuid4().hex[:12]}"
    s3_server.minio().make_bucket(name, s3_server.region)
    return name
