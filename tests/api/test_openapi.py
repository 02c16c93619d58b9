"""The served OpenAPI document: every path of the contract with its parameters, error responses in the
error envelope, docs page served; plus the generic error behaviour (404/405/500 in the envelope).

Response bodies themselves are checked against this document by every test (tests/api/helpers.py)."""

from __future__ import annotations

import logging

import pytest

from tests.api.helpers import API, error_of

EXPECTED = {
    ("get", "/cluster"): set(),
    ("get", "/collections"): set(),
    ("get", "/collections/{name}"): {"name"},
    ("get", "/collections/{name}/cluster"): {"name"},
    ("get", "/collections/{name}/snapshots"): {"name"},
    ("post", "/collections/{name}/snapshots"): {"name", "wait"},
    ("delete", "/collections/{name}/snapshots/{snapshotName}"): {"name", "snapshotName", "wait"},
    ("get", "/collections/{name}/snapshots/{snapshotName}/download"): {"name", "snapshotName"},
    ("put", "/collections/{name}/snapshots/recover"): {"name", "wait"},
    ("get", "/collections/{name}/shards/{shardId}/snapshots"): {"name", "shardId"},
    ("post", "/collections/{name}/shards/{shardId}/snapshots"): {"name", "shardId", "wait"},
    ("get", "/storage"): set(),
    ("post", "/storage"): set(),
    ("get", "/storage/{id}"): {"id"},
    ("put", "/storage/{id}"): {"id"},
    ("delete", "/storage/{id}"): {"id", "force"},  # force: beyond the contract, to delete one holding backups
    ("post", "/storage/test"): set(),
    ("get", "/jobs"): {"status", "type", "page", "limit"},
    ("post", "/jobs"): set(),
    ("get", "/jobs/{id}"): {"id"},
    ("post", "/jobs/{id}/cancel"): {"id"},
    ("post", "/jobs/{id}/retry"): {"id"},
}
WITH_BODY = {("put", "/collections/{name}/snapshots/recover"), ("post", "/storage"), ("put", "/storage/{id}"),
             ("post", "/storage/test"), ("post", "/jobs")}


@pytest.fixture
def spec(offline_client):
    return offline_client.checker.spec


def _parameters(spec, path, method):
    item = spec["paths"][path]
    params = [*item.get("parameters", []), *item[method].get("parameters", [])]
    return {p["name"]: p for p in params}


def test_every_contract_path_is_documented(spec):
    assert spec["openapi"] == "3.1.0"
    for (method, path), names in EXPECTED.items():
        full = API + path
        assert full in spec["paths"], full
        assert method in spec["paths"][full], (method, full)
        assert set(_parameters(spec, full, method)) == names, (method, full)
        if (method, path) in WITH_BODY:
            body = spec["paths"][full][method]["requestBody"]
            assert "application/json" in body["content"]
    assert {"/healthz", "/readyz"} <= set(spec["paths"])


def test_parameter_schemas(spec):
    jobs = _parameters(spec, f"{API}/jobs", "get")
    assert jobs["page"]["schema"] == {"type": "integer", "default": 1, "minimum": 1}
    assert jobs["limit"]["schema"] == {"type": "integer", "default": 20, "minimum": 1, "maximum": 100}
    assert jobs["status"]["schema"]["enum"] == ["pending", "running", "completed", "failed", "cancelled"]
    assert jobs["type"]["schema"]["enum"] == ["backup", "restore", "shard_backup", "shard_restore"]
    shard = _parameters(spec, f"{API}/collections/{{name}}/shards/{{shardId}}/snapshots", "get")
    assert shard["shardId"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
    assert shard["name"]["schema"]["pattern"] == "^[A-Za-z0-9_.-]{1,255}$"
    wait = _parameters(spec, f"{API}/collections/{{name}}/snapshots", "post")["wait"]
    assert wait["schema"] == {"type": "boolean", "default": True}


def test_enums_match_the_contract(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["Job"]["properties"]["type"]["enum"] == ["backup", "restore", "shard_backup", "shard_restore"]
    assert schemas["Job"]["properties"]["status"]["enum"] == [
        "pending", "running", "completed", "failed", "cancelled"]
    assert schemas["StorageCreate"]["properties"]["type"]["enum"] == ["local", "s3"]
    assert schemas["Recover"]["properties"]["priority"]["enum"] == ["replica", "snapshot", "no_sync"]
    assert schemas["Recover"]["properties"]["priority"]["default"] == "snapshot"
    assert schemas["Cluster"]["properties"]["status"]["enum"] == ["green", "yellow", "red"]
    assert "s3_secret_key" not in schemas["Storage"]["properties"]


def test_the_document_is_valid_openapi(spec):
    import openapi_spec_validator as validator
    validator.validate(spec)


def test_every_error_response_is_the_error_envelope(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status == "default" or int(status) >= 400:
                    if "$ref" in response:
                        name = response["$ref"].rsplit("/", 1)[1]
                        response = spec["components"]["responses"][name]
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["$ref"] in ("#/components/schemas/Error", "#/components/schemas/NotReady"), (
                        method, path, status)


def test_error_statuses_documented_per_operation(spec):
    def codes(method, path):
        return set(spec["paths"][API + path][method]["responses"])

    assert {"401", "404", "422", "502", "503"} <= codes("get", "/collections/{name}")
    assert {"401", "404", "409", "503"} <= codes("post", "/jobs/{id}/cancel")
    assert {"401", "404", "409", "503"} <= codes("post", "/jobs/{id}/retry")
    assert {"401", "409", "404"} <= codes("delete", "/storage/{id}")
    assert {"400", "401", "415", "422", "503"} <= codes("post", "/jobs")
    assert {"202", "200"} <= codes("post", "/collections/{name}/snapshots")
    assert {"202", "200"} <= codes("delete", "/collections/{name}/snapshots/{snapshotName}")


def test_job_list_is_documented_bare(spec):
    schema = spec["paths"][f"{API}/jobs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/JobPage"}
    assert set(spec["components"]["schemas"]["JobPage"]["properties"]) == {"items", "total", "page", "limit"}


def test_docs_page_is_served(offline_client):
    resp = offline_client.get("/docs")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert b"/openapi.json" in resp.data
    assert b"swagger-ui" in resp.data


def test_unknown_route_is_404_in_the_envelope(offline_client):
    resp = offline_client.get(f"{API}/nothing/here")
    assert resp.status_code == 404
    assert "no such endpoint" in error_of(resp)
    assert offline_client.get("/nothing").status_code == 404


def test_wrong_method_is_405_in_the_envelope(offline_client):
    resp = offline_client.patch(f"{API}/jobs")
    assert resp.status_code == 405
    assert "PATCH" in error_of(resp)
    assert "POST" in resp.headers["Allow"]


def test_unexpected_errors_are_a_generic_500(make_config, caplog):
    from api.app import create_app

    app = create_app(make_config())

    def explode() -> None:
        raise RuntimeError("secret internals at /srv/x.py line 3")

    app.add_url_rule(f"{API}/explode", "explode", explode)
    caplog.set_level(logging.ERROR)
    for testing in (True, False):
        app.testing = testing
        resp = app.test_client().get(f"{API}/explode")
        assert resp.status_code == 500
        body = resp.get_json()
        assert body["status"]["error"] == "internal server error; the details are in the server log"
        assert "secret internals" not in resp.get_data(as_text=True)
        assert "Traceback" not in resp.get_data(as_text=True)
    assert "secret internals" in caplog.text  # logged server-side, with the traceback


def test_the_checker_is_not_vacuous(offline_client):
    """A body that breaks the documented schema is caught (the check every test relies on)."""
    checker = offline_client.checker
    job_page = {"$ref": "#/components/schemas/JobPage"}
    checker.validate_schema(job_page, {"items": [], "total": 0, "page": 1, "limit": 20}, "ok")
    with pytest.raises(AssertionError):
        checker.validate_schema(job_page, {"items": [], "total": 0, "page": 1}, "missing limit")
    with pytest.raises(AssertionError):
        checker.validate_schema({"$ref": "#/components/schemas/StorageEnvelope"},
                                {"status": "ok", "time": 0.1, "result": {"id": "x"}}, "partial storage")


def test_oversized_body_is_413_in_the_envelope(offline_client):
    resp = offline_client.post(f"{API}/jobs", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                               content_type="application/json")
    assert resp.status_code == 413
    assert error_of(resp) == "the request body is larger than the 1048576 bytes the API accepts"
