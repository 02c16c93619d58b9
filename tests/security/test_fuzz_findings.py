"""Regression tests for what schemathesis found (tests/security/test_api_fuzz.py), one per finding."""

from __future__ import annotations

import pytest

from tests.api.helpers import API, error_of, result_of


def _s3(s3_server, bucket: str, **overrides: str) -> dict:
    body = {"name": "s3", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": bucket,
            "s3_region": s3_server.region, "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key}
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"s3_bucket": "0"}, "s3_bucket"),
        ({"s3_bucket": "ab"}, "s3_bucket"),
        ({"s3_bucket": "-leading-dash"}, "s3_bucket"),
        ({"s3_bucket": "a" * 64}, "s3_bucket"),
        ({"s3_endpoint": "http://127.0.0.1:9000/some/path"}, "s3_endpoint"),
        ({"s3_endpoint": "http://user:pw@127.0.0.1:9000"}, "s3_endpoint"),
        ({"s3_endpoint": "http://127.0.0.1:99999"}, "s3_endpoint"),
        ({"s3_endpoint": "http://127.0.0.1:9000?x=1"}, "s3_endpoint"),
        ({"s3_region": "not a region!"}, "s3_region"),
    ],
)
def test_an_s3_backend_that_could_never_work_is_refused_when_saved(client, s3_server, s3_bucket, overrides,
                                                                    field):
    """Found: POST /storage accepted bucket "0"; every later use of the backend (GET /backups, jobs) then
    answered 503 "cannot be used". Whatever the storage client refuses is now a 422 naming the field, on
    create, on update and on test."""
    body = _s3(s3_server, s3_bucket, **overrides)
    for method, path, payload in (("POST", f"{API}/storage", body), ("POST", f"{API}/storage/test", body)):
        resp = client.open(path, method, json=payload)
        assert resp.status_code == 422, (method, path, resp.get_json())
        assert error_of(resp).startswith(f"{field}:"), error_of(resp)
    assert result_of(client.get(f"{API}/storage")) == []

    good = result_of(client.post(f"{API}/storage", json=_s3(s3_server, s3_bucket)))
    resp = client.put(f"{API}/storage/{good['id']}", json=overrides)
    assert resp.status_code == 422 and error_of(resp).startswith(f"{field}:"), resp.get_json()
    assert result_of(client.get(f"{API}/storage/{good['id']}")) == good
    listing = client.get(f"{API}/backups", query_string={"storage_id": good["id"]})
    assert listing.status_code == 200, listing.get_json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/storage/test"),
        ("GET", "/storage"),  # a route that exists, for contrast
        ("POST", "/collections/alpha/snapshots/recover"),
        ("PATCH", "/jobs"),
        ("PUT", "/jobs/abc/cancel"),
        ("PATCH", "/storage/st_000000000000"),
    ],
)
def test_405_allow_headers_only_name_methods_that_are_routed(client, method, path):
    """Schemathesis' allow_header_conformance flags 405s whose Allow header names methods the OpenAPI
    path does not document, e.g. DELETE for /collections/{name}/snapshots/recover. That header is right:
    the URL also matches /collections/{name}/snapshots/{snapshotName} (a snapshot called "recover"), and
    DELETE there is answered (422: not a .snapshot name). What a client must be able to rely on is that
    every method in Allow gets an answer other than 405."""
    resp = client.open(f"{API}{path}", method, json={})
    if resp.status_code != 405:
        assert method == "GET"
        return
    allowed = [m.strip() for m in resp.headers["Allow"].split(",")]
    assert allowed and method not in allowed
    raw = client.app.test_client()  # HEAD and OPTIONS are Flask's own, outside the spec checker's reach
    for other in allowed:
        answer = raw.open(f"{API}{path}", method=other, json={})
        assert answer.status_code != 405, (other, path)
