"""API keys: a failed authentication says nothing about whether a resource exists, and keys are compared
in constant time (every configured key, digests of equal length, no early exit)."""

from __future__ import annotations

import hmac
import json
from typing import Any

import pytest

from api import auth
from tests.api.helpers import API, closed_port_url, result_of

KEYS = ("first-key-8d1f0c2b", "second-key-of-another-length-5e7a")
GOOD = {"X-API-Key": KEYS[0]}


@pytest.fixture
def secured(make_client, storage_root, qdrant):
    qdrant.create_collection("alpha")  # the existing resources: a job needs its collection to be accepted
    return make_client(api_keys=KEYS)


def _comparable(resp: Any) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """Status, body and headers of a response, minus what measures the request rather than describes it
    (the envelope's ``time``, and Content-Length, which follows from the body)."""
    body = resp.get_json()
    body.pop("time")
    headers = sorted((k, v) for k, v in resp.headers.items() if k != "Content-Length")
    return resp.status_code, body, headers


def _existing_and_missing(secured, storage_root) -> list[tuple[str, str, str]]:
    """(method, path of an existing resource, path of a missing one) for every id-addressed operation."""
    storage = result_of(secured.post(f"{API}/storage", headers=GOOD, json={
        "name": "d", "type": "local", "path": str(storage_root / "d"), "is_default": True}))
    job = result_of(secured.post(f"{API}/jobs", headers=GOOD, json={"type": "backup", "collection_name": "alpha"}))
    sid, jid = storage["id"], job["id"]
    return [
        ("GET", f"{API}/jobs/{jid}", f"{API}/jobs/{jid[:-4]}0000"),
        ("POST", f"{API}/jobs/{jid}/cancel", f"{API}/jobs/nope/cancel"),
        ("POST", f"{API}/jobs/{jid}/retry", f"{API}/jobs/nope/retry"),
        ("GET", f"{API}/storage/{sid}", f"{API}/storage/st_000000000000"),
        ("PUT", f"{API}/storage/{sid}", f"{API}/storage/st_000000000000"),
        ("DELETE", f"{API}/storage/{sid}", f"{API}/storage/st_000000000000"),
        ("GET", f"{API}/collections/alpha", f"{API}/collections/nope"),
        ("GET", f"{API}/collections/alpha/snapshots", f"{API}/collections/nope/snapshots"),
        ("GET", f"{API}/backups/{sid}/20260101T000000Z-deadbeef", f"{API}/backups/st_000000000000/x"),
        ("GET", f"{API}/no/such/thing", f"{API}/jobs/{jid}/nothing"),
    ]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": f"Bearer {KEYS[0]}x"},
                                     {"Authorization": f"Basic {KEYS[0]}"}])
def test_401_is_the_same_whether_or_not_the_resource_exists(secured, storage_root, headers):
    pairs = _existing_and_missing(secured, storage_root)
    answers = set()
    for method, existing, missing in pairs:
        a = secured.open(existing, method, headers=headers, json={})
        b = secured.open(missing, method, headers=headers, json={})
        assert a.status_code == b.status_code == 401, (method, existing, missing)
        assert _comparable(a) == _comparable(b), (method, existing)
        answers.add(json.dumps(_comparable(a)))
    assert len(answers) == 1  # one 401 for everything: not even the operation shows through
    # With the key, the two differ (so the pairs above really were an existing and a missing resource).
    assert secured.get(pairs[0][1], headers=GOOD).status_code == 200
    assert secured.get(pairs[0][2], headers=GOOD).status_code == 404


def test_the_401_is_decided_before_anything_is_looked_up(make_client, qdrant):
    """Pointed at a Redis and a Qdrant that do not answer, an unauthenticated request still gets the same
    401 (not a 503): nothing was looked up, so nothing about the resource can leak, not even through timing."""
    up = make_client(api_keys=KEYS)
    down = make_client(api_keys=KEYS, redis_url=closed_port_url("redis") + "/0", qdrant_url=closed_port_url())
    for path in (f"{API}/jobs/abc", f"{API}/storage/st_1", f"{API}/collections/alpha"):
        assert _comparable(up.get(path)) == _comparable(down.get(path))
        assert down.get(path).status_code == 401


def test_keys_are_compared_in_constant_time(secured, monkeypatch):
    """Every configured key is compared for every presented key, whether or not one matches, and always
    as equal-length digests through hmac.compare_digest (whose time does not depend on the contents)."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    cases = [({"X-API-Key": KEYS[0]}, 200), ({"X-API-Key": KEYS[1]}, 200), ({"X-API-Key": "x"}, 401),
             ({"X-API-Key": "y" * 500}, 401), ({"Authorization": f"Bearer {KEYS[1]}", "X-API-Key": "z"}, 200)]
    for headers, status in cases:
        calls.clear()
        assert secured.get(f"{API}/storage", headers=headers).status_code == status
        presented = len(headers)
        assert len(calls) == presented * len(KEYS), (headers, calls)
        assert all(a == b == 32 for a, b in calls), calls
