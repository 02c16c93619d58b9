"""API keys: every /api/v1 route needs one (Bearer or X-API-Key) when QBM_API_KEYS is set; probes and docs
stay open; the 401 never depends on whether the resource exists."""

from __future__ import annotations

import logging

import pytest

from api.auth import UNAUTHORIZED
from tests.api.helpers import API, error_of, result_of

KEYS = ("key-one-4f9a1c", "key-two-7b2e0d")
SAMPLES = {"name": "alpha", "snapshotName": "x.snapshot", "shardId": "0", "id": "st_000000000000",
           "storageId": "st_000000000000", "backupId": "20260101T000000Z-deadbeef"}


@pytest.fixture
def secured(make_client, qdrant):
    qdrant.create_collection("alpha")
    return make_client(qdrant_url=qdrant.url, api_keys=KEYS)


def _operations(spec):
    for path, item in spec["paths"].items():
        if not path.startswith(API):
            continue
        for method in ("get", "post", "put", "delete"):
            if method in item:
                concrete = path
                for name, value in SAMPLES.items():
                    concrete = concrete.replace("{" + name + "}", value)
                yield method.upper(), concrete


def test_every_api_route_needs_a_key(secured, qdrant):
    operations = list(_operations(secured.checker.spec))
    # the contract's 22, schedules (6), the backup catalog (4) and its pin/unpin (2), shard snapshot delete and
    # download (2)
    assert len(operations) == 36
    for method, path in operations:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                        {"Authorization": f"Basic {KEYS[0]}"}, {"Authorization": "Bearer "},
                        {"X-API-Key": KEYS[0][:-1]}, {"X-API-Key": KEYS[0] + "x"}):
            resp = secured.open(path, method, headers=headers, json={})
            assert resp.status_code == 401, (method, path, headers)
            assert error_of(resp) == UNAUTHORIZED
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert qdrant.requests_seen == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"Authorization": f"bearer {KEYS[1]}"},
        {"X-API-Key": KEYS[0]},
        {"X-API-Key": KEYS[1]},
        {"Authorization": "Bearer wrong", "X-API-Key": KEYS[1]},
    ],
)
def test_a_valid_key_is_accepted(secured, headers):
    resp = secured.get(f"{API}/collections", headers=headers)
    assert resp.status_code == 200
    assert result_of(resp) == ["alpha"]


def test_401_does_not_reveal_whether_something_exists(secured):
    existing = secured.get(f"{API}/collections/alpha")
    missing = secured.get(f"{API}/collections/nope")
    no_route = secured.get(f"{API}/no/such/route")
    assert existing.status_code == missing.status_code == no_route.status_code == 401
    assert error_of(existing) == error_of(missing) == error_of(no_route)
    ok = {"X-API-Key": KEYS[0]}
    assert secured.get(f"{API}/collections/nope", headers=ok).status_code == 404
    assert secured.get(f"{API}/no/such/route", headers=ok).status_code == 404


def test_probes_and_docs_stay_open(secured):
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200
    assert secured.get("/openapi.json").status_code == 200
    docs = secured.get("/docs")
    assert docs.status_code == 200
    assert b"<html" in docs.data.lower()


def test_spec_declares_the_schemes(secured):
    spec = secured.checker.spec
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer",
                                     "description": "One of QBM_API_KEYS as a bearer token"}
    assert schemes["apiKeyHeader"]["in"] == "header"
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    assert spec["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert spec["paths"]["/readyz"]["get"]["security"] == []
    for path, item in spec["paths"].items():
        if path.startswith(API):
            for key, operation in item.items():
                if key != "parameters":
                    assert "401" in operation["responses"], (key, path)


def test_without_keys_nothing_is_required(client):
    assert client.get(f"{API}/collections").status_code == 200
    assert "security" not in client.checker.spec


def test_keys_are_never_logged(secured, caplog):
    caplog.set_level(logging.DEBUG)
    secured.get(f"{API}/collections", headers={"X-API-Key": KEYS[0]})
    secured.get(f"{API}/collections", headers={"Authorization": f"Bearer {KEYS[1]}"})
    secured.get(f"{API}/collections", headers={"X-API-Key": "guess-" + KEYS[0]})
    for key in KEYS:
        assert key not in caplog.text
