"""QBM configured with an API key the real Qdrant does not accept: the user is told, at once, by the API and by
the job."""

from __future__ import annotations

import dataclasses

import pytest

from tests.real_qdrant import data
from tests.real_qdrant.helpers import register_storage, run_job

pytestmark = pytest.mark.real_qdrant


@pytest.fixture
def engine_config(engine_config):
    return dataclasses.replace(engine_config, qdrant_api_key="not-the-key")


def test_wrong_qdrant_api_key_is_reported_by_api_and_job(client, jobs, worker, qdrant_node, docs, engine_config):
    resp = client.get("/api/v1/collections")
    assert resp.status_code == 502, resp.get_json()
    assert "401" in resp.get_json()["status"]["error"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["qdrant"].startswith("answered 401")

    register_storage(client, "local", engine_config)
    failed = run_job(client, jobs, worker, expect="failed", timeout=30, type="backup", collection_name=docs)
    assert "401" in failed["error"] and "Invalid API key" in failed["error"]
    assert "not-the-key" not in failed["error"]
    assert qdrant_node.result("GET", f"/collections/{docs}/snapshots") == []
    assert data.exact_count(qdrant_node, docs) == data.POINTS
