"""Probes: /healthz (process up) and /readyz (Redis and Qdrant reachable, 503 naming the one that is not)."""

from __future__ import annotations

from tests.api.helpers import error_of, result_of


def test_healthz_answers_without_dependencies(offline_client):
    resp = offline_client.get("/healthz")
    assert resp.status_code == 200
    assert result_of(resp)["alive"] is True


def test_readyz_ok_when_redis_and_qdrant_answer(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert result_of(resp) == {"ready": True, "checks": {"redis": "ok", "qdrant": "ok"}}


def test_readyz_names_qdrant_when_it_is_down(offline_client):
    resp = offline_client.get("/readyz")
    assert resp.status_code == 503
    assert "qdrant" in error_of(resp)
    assert "redis" not in error_of(resp)
    checks = resp.get_json()["checks"]
    assert checks["redis"] == "ok"
    assert checks["qdrant"].startswith("not reachable")


def test_readyz_names_redis_when_it_is_down(no_redis_client):
    resp = no_redis_client.get("/readyz")
    assert resp.status_code == 503
    assert "redis" in error_of(resp)
    checks = resp.get_json()["checks"]
    assert checks["qdrant"] == "ok"
    assert checks["redis"].startswith("not reachable")


def test_readyz_reports_a_qdrant_error_answer(client, qdrant):
    qdrant.faults.fail_next(5, status=500, path_contains="/")
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["qdrant"].startswith("answered 500")


def test_wsgi_module_builds_the_app_from_the_environment(monkeypatch, redis_url, key_prefix, tmp_path):
    import importlib
    import sys

    monkeypatch.setenv("QBM_REDIS_URL", redis_url)
    monkeypatch.setenv("QBM_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("QBM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QBM_API_KEYS", "wsgi-key-1234")
    sys.modules.pop("api.wsgi", None)
    wsgi = importlib.import_module("api.wsgi")
    try:
        client = wsgi.app.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/v1/storage").status_code == 401
        assert client.get("/api/v1/storage", headers={"X-API-Key": "wsgi-key-1234"}).status_code == 200
    finally:
        sys.modules.pop("api.wsgi", None)


def test_readyz_reports_a_qdrant_that_refuses_the_api_key(make_client, tmp_path):
    # Qdrant answers GET / without looking at the key; readiness must ask something the key is needed for.
    from tests.qdrant_double import QdrantDouble

    keyed = QdrantDouble(tmp_path / "keyed", api_key="the-right-key")
    keyed.start()
    try:
        resp = make_client(qdrant_url=keyed.url, qdrant_api_key="a-wrong-key").get("/readyz")
        assert resp.status_code == 503
        assert resp.get_json()["checks"]["qdrant"] == "answered 401: Invalid API key or JWT"
        assert make_client(qdrant_url=keyed.url, qdrant_api_key="the-right-key").get("/readyz").status_code == 200
    finally:
        keyed.stop()
