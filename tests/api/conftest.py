"""Fixtures for the API tests: the app against real Redis, the Qdrant double and moto S3.

Every response a test receives through ``client`` is checked against the OpenAPI document the app itself
serves (status code documented for that operation, body valid against the documented schema), so the
docs cannot drift from what the endpoints really send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from shared.runtime.config import Config
from tests.api.helpers import API, CheckedClient, SpecChecker, closed_port_url
from tests.recorder import EnqueueRecorder


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    """The one directory local storage may use in these tests (QBM_STORAGE_ROOTS)."""
    root = tmp_path / "backups"
    root.mkdir()
    return root


@pytest.fixture
def enqueued() -> EnqueueRecorder:
    """Job ids the app handed to the workers, in order."""
    return EnqueueRecorder()


@pytest.fixture
def make_config(redis_url: str, key_prefix: str, storage_root: Path, secret_key: str) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_url_explicit": True,
            "qdrant_url": closed_port_url(),
            "key_prefix": key_prefix,
            "storage_roots": (storage_root,),
            "data_dir": storage_root,
            "secret_keys": (secret_key,),
        }
        values.update(overrides)
        return Config(**values)

    return make


@pytest.fixture
def make_client(make_config: Callable[..., Config], enqueued: list[str]) -> Callable[..., CheckedClient]:
    """Build a spec-checked client for an app with the given Config overrides."""

    def make(*, enqueue: Callable[[str], None] | None = None, real_enqueue: bool = False,
             **overrides: Any) -> CheckedClient:
        """``real_enqueue``: hand jobs to Dramatiq's queues in Redis (the app's own enqueuer), not a recorder."""
        app = create_app(make_config(**overrides), enqueue=None if real_enqueue else enqueue or enqueued)
        app.testing = True
        spec = app.test_client().get("/openapi.json").get_json()
        return CheckedClient(app, SpecChecker(spec))

    return make


@pytest.fixture
def client(make_client: Callable[..., CheckedClient], qdrant: Any) -> CheckedClient:
    """The app against the Qdrant double, no API keys."""
    return make_client(qdrant_url=qdrant.url)


@pytest.fixture
def offline_client(make_client: Callable[..., CheckedClient]) -> CheckedClient:
    """The app pointed at a closed port instead of Qdrant (Redis is up)."""
    return make_client()


@pytest.fixture
def no_redis_client(make_client: Callable[..., CheckedClient], qdrant: Any) -> CheckedClient:
    """The app pointed at a closed port instead of Redis (Qdrant is up)."""
    return make_client(qdrant_url=qdrant.url, redis_url=closed_port_url("redis") + "/0")


@pytest.fixture
def local_storage(client: CheckedClient, storage_root: Path) -> Callable[..., dict]:
    """Create a local backend through the API and return it."""

    def create(name: str = "local", *, is_default: bool = True, path: Path | None = None) -> dict:
        target = path or storage_root / name
        resp = client.post(f"{API}/storage", json={"name": name, "type": "local", "path": str(target),
                                                    "is_default": is_default})
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()["result"]

    return create


@pytest.fixture
def s3_backend(s3_server: Any, s3_bucket: str) -> Iterator[dict[str, Any]]:
    """A valid S3 backend description pointing at moto."""
    yield {
        "name": "s3",
        "type": "s3",
        "s3_endpoint": s3_server.endpoint,
        "s3_bucket": s3_bucket,
        "s3_region": s3_server.region,
        "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key,
    }
