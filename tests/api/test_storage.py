"""Storage backends: CRUD with per-type validation, the default flag, connectivity tests (local, moto S3)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from shared.adapters.storage import LocalStorage
from shared.domain.catalog import manifest_refs
from shared.records.job_store import JobStore
from tests.api.helpers import API, error_of, result_of
from tests.backup_factory import put_backup

PUBLIC_FIELDS = {"id", "name", "type", "path", "s3_endpoint", "s3_bucket", "s3_region", "s3_access_key",
                 "is_default", "created_at", "updated_at"}


@pytest.fixture
def client(make_client):
    """These endpoints never talk to Qdrant: no double needed (its shutdown costs ~0.5 s per test)."""
    return make_client()


# --- create / get / list ------------------------------------------------------------------------------


def test_create_local_and_read_it_back(client, storage_root):
    body = {"name": "disk", "type": "local", "path": str(storage_root / "a")}
    resp = client.post(f"{API}/storage", json=body)
    assert resp.status_code == 201
    created = result_of(resp)
    assert set(created) == PUBLIC_FIELDS
    assert created["type"] == "local"
    assert created["path"] == str((storage_root / "a").resolve())
    assert created["is_default"] is False
    assert created["s3_bucket"] is None
    assert created["created_at"].endswith("Z")
    assert result_of(client.get(f"{API}/storage/{created['id']}")) == created
    assert result_of(client.get(f"{API}/storage")) == [created]


def test_create_s3_never_returns_the_secret(client, s3_backend, caplog):
    caplog.set_level(logging.DEBUG)
    resp = client.post(f"{API}/storage", json=s3_backend)
    assert resp.status_code == 201
    created = result_of(resp)
    assert set(created) == PUBLIC_FIELDS
    assert created["s3_bucket"] == s3_backend["s3_bucket"]
    assert created["s3_endpoint"] == s3_backend["s3_endpoint"]
    assert created["path"] is None
    secret = s3_backend["s3_secret_key"]
    for resp in (client.get(f"{API}/storage"), client.get(f"{API}/storage/{created['id']}"),
                 client.put(f"{API}/storage/{created['id']}", json={"name": "renamed"}),
                 client.post(f"{API}/storage/test", json=s3_backend)):
        assert resp.status_code == 200
        assert secret not in resp.get_data(as_text=True)
        assert "s3_secret_key" not in resp.get_data(as_text=True)
    assert secret not in caplog.text


def test_get_unknown_storage_is_404(client):
    for storage_id in ("st_000000000000", "default", "../x"):
        resp = client.get(f"{API}/storage/{storage_id}")
        assert resp.status_code == 404, storage_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "local", "path": "/x"}, "name"),
        ({"name": "", "type": "local", "path": "/x"}, "name"),
        ({"name": "n", "path": "/x"}, "type"),
        ({"name": "n", "type": "ftp", "path": "/x"}, "type"),
        ({"name": "n", "type": "local"}, "path"),
        ({"name": "n", "type": "local", "path": None}, "path"),
        ({"name": "n", "type": "local", "path": "relative/dir"}, "path"),
        ({"name": "n", "type": "local", "path": "/etc"}, "path"),
        ({"name": "n", "type": "local", "path": "{root}/../escape"}, "path"),
        ({"name": "n", "type": "local", "path": "{root}/a", "s3_bucket": "b"}, "s3_bucket"),
        ({"name": "n", "type": "local", "path": "{root}/a", "is_default": "maybe"}, "is_default"),
        ({"name": "n", "type": "local", "path": "{root}/a", "surprise": 1}, "surprise"),
    ],
)
def test_create_local_validation(client, storage_root, body, field):
    body = {k: v.replace("{root}", str(storage_root)) if isinstance(v, str) else v for k, v in body.items()}
    resp = client.post(f"{API}/storage", json=body)
    assert resp.status_code == 422, resp.get_json()
    assert error_of(resp).startswith(f"{field}:"), error_of(resp)
    assert result_of(client.get(f"{API}/storage")) == []


@pytest.mark.parametrize("missing",
                         ["s3_endpoint", "s3_bucket", "s3_region", "s3_access_key", "s3_secret_key"])
def test_create_s3_needs_every_field(client, s3_backend, missing):
    body = dict(s3_backend)
    del body[missing]
    resp = client.post(f"{API}/storage", json=body)
    assert resp.status_code == 422
    assert error_of(resp).startswith(f"{missing}:")


@pytest.mark.parametrize("endpoint", ["ftp://host", "not a url", "http://"])
def test_create_s3_checks_the_endpoint(client, s3_backend, endpoint):
    resp = client.post(f"{API}/storage", json={**s3_backend, "s3_endpoint": endpoint})
    assert resp.status_code == 422
    assert error_of(resp).startswith("s3_endpoint:")


def test_create_s3_refuses_a_path(client, s3_backend, storage_root):
    resp = client.post(f"{API}/storage", json={**s3_backend, "path": str(storage_root)})
    assert resp.status_code == 422
    assert error_of(resp).startswith("path:")


def test_malformed_bodies(client):
    resp = client.post(f"{API}/storage", data="{", content_type="application/json")
    assert resp.status_code == 400
    resp = client.post(f"{API}/storage", data="name=x", content_type="text/plain")
    assert resp.status_code == 415
    resp = client.post(f"{API}/storage")
    assert resp.status_code == 415
    resp = client.post(f"{API}/storage", json=[1, 2])
    assert resp.status_code == 422


# --- default flag -------------------------------------------------------------------------------------


def test_only_one_default(client, local_storage):
    first = local_storage("one", is_default=True)
    assert first["is_default"] is True
    second = local_storage("two", is_default=True)
    listed = {s["id"]: s["is_default"] for s in result_of(client.get(f"{API}/storage"))}
    assert listed == {first["id"]: False, second["id"]: True}
    result_of(client.put(f"{API}/storage/{first['id']}", json={"is_default": True}))
    listed = {s["id"]: s["is_default"] for s in result_of(client.get(f"{API}/storage"))}
    assert listed == {first["id"]: True, second["id"]: False}
    result_of(client.put(f"{API}/storage/{first['id']}", json={"is_default": False}))
    assert not any(s["is_default"] for s in result_of(client.get(f"{API}/storage")))


# --- update -------------------------------------------------------------------------------------------


def test_update_is_partial(client, local_storage, storage_root):
    created = local_storage("disk", is_default=False)
    resp = client.put(f"{API}/storage/{created['id']}", json={"name": "renamed"})
    assert resp.status_code == 200
    updated = result_of(resp)
    assert updated["name"] == "renamed"
    assert updated["path"] == created["path"]
    resp = client.put(f"{API}/storage/{created['id']}", json={"path": str(storage_root / "new")})
    assert result_of(resp)["path"] == str((storage_root / "new").resolve())


def test_update_validates_the_merged_result(client, local_storage):
    created = local_storage("disk")
    cases = (({"path": "/etc"}, "path"), ({"path": None}, "path"), ({"s3_bucket": "b"}, "s3_bucket"),
             ({"name": ""}, "name"), ({"type": "s3"}, "type"))
    for body, field in cases:
        resp = client.put(f"{API}/storage/{created['id']}", json=body)
        assert resp.status_code == 422, body
        assert error_of(resp).startswith(f"{field}:"), error_of(resp)
    assert result_of(client.get(f"{API}/storage/{created['id']}")) == created
    # repeating the current type is fine
    assert client.put(f"{API}/storage/{created['id']}", json={"type": "local"}).status_code == 200


def test_update_s3_keeps_the_secret_unless_given(client, s3_backend, s3_server):
    created = result_of(client.post(f"{API}/storage", json=s3_backend))
    result_of(client.put(f"{API}/storage/{created['id']}", json={"s3_region": "eu-west-1"}))
    store = client.app.extensions["qbm"].storage_configs  # decrypts: Redis holds only the encrypted form

    def stored() -> str:
        return store.get(created["id"], with_secret=True)["s3_secret_key"]

    assert stored() == s3_backend["s3_secret_key"]
    result_of(client.put(f"{API}/storage/{created['id']}", json={"s3_secret_key": "new-secret-value"}))
    assert stored() == "new-secret-value"
    resp = client.put(f"{API}/storage/{created['id']}", json={"s3_secret_key": None})
    assert resp.status_code == 422
    assert error_of(resp).startswith("s3_secret_key:")


def test_update_unknown_is_404(client):
    assert client.put(f"{API}/storage/st_000000000000", json={"name": "x"}).status_code == 404


# --- delete -------------------------------------------------------------------------------------------


def test_delete(client, local_storage):
    created = local_storage("disk")
    resp = client.delete(f"{API}/storage/{created['id']}")
    assert resp.status_code == 200
    assert result_of(resp) is True
    assert client.get(f"{API}/storage/{created['id']}").status_code == 404
    assert client.delete(f"{API}/storage/{created['id']}").status_code == 404


def test_delete_refused_while_a_job_uses_it(client, local_storage, redis_client, key_prefix):
    created = local_storage("disk")
    job = result_of(client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "alpha"}))
    assert job["metadata"]["storage_id"] == created["id"]
    resp = client.delete(f"{API}/storage/{created['id']}")
    assert resp.status_code == 409
    assert "1 pending or running job" in error_of(resp)
    jobs = JobStore(redis_client, key_prefix)
    jobs.transition(job["id"], "running")
    assert client.delete(f"{API}/storage/{created['id']}").status_code == 409
    jobs.transition(job["id"], "completed")
    assert client.delete(f"{API}/storage/{created['id']}").status_code == 200


def test_delete_refused_while_a_schedule_uses_it(client, local_storage):
    used, other = local_storage("disk"), local_storage("other")
    schedule = result_of(client.post(f"{API}/schedules", json={
        "name": "nightly", "cron": "30 2 * * *", "collections": ["docs"], "storage_id": used["id"]}))
    resp = client.delete(f"{API}/storage/{used['id']}")
    assert resp.status_code == 409
    assert f"schedule(s) 'nightly' ({schedule['id']})" in error_of(resp)
    assert client.get(f"{API}/storage/{used['id']}").status_code == 200  # still there
    assert client.put(f"{API}/schedules/{schedule['id']}", json={"storage_id": other["id"]}).status_code == 200
    assert client.delete(f"{API}/storage/{used['id']}").status_code == 200


# --- test connectivity --------------------------------------------------------------------------------


def test_test_local_success_saves_nothing(client, storage_root):
    target = storage_root / "new" / "dir"
    resp = client.post(f"{API}/storage/test", json={"name": "t", "type": "local", "path": str(target)})
    assert resp.status_code == 200
    result = result_of(resp)
    assert result["success"] is True, result
    assert not (storage_root / "new").exists()  # the probe and the folders made for it are gone
    assert result_of(client.get(f"{API}/storage")) == []
    (storage_root / "kept").mkdir()
    resp = client.post(f"{API}/storage/test", json={"name": "t", "type": "local", "path": str(storage_root / "kept")})
    assert result_of(resp)["success"] is True and (storage_root / "kept").is_dir()  # what existed stays


def test_test_local_failure_is_success_false(client, storage_root):
    blocker = storage_root / "file"
    blocker.write_text("not a directory")
    resp = client.post(f"{API}/storage/test", json={"name": "t", "type": "local", "path": str(blocker)})
    assert resp.status_code == 200
    result = result_of(resp)
    assert result["success"] is False
    assert result["message"]


def test_test_local_invalid_input_is_422(client):
    resp = client.post(f"{API}/storage/test", json={"name": "t", "type": "local", "path": "/etc"})
    assert resp.status_code == 422
    assert error_of(resp).startswith("path:")


def test_test_s3_success(client, s3_backend, s3_server):
    resp = client.post(f"{API}/storage/test", json=s3_backend)
    assert resp.status_code == 200
    assert result_of(resp)["success"] is True
    objects = list(s3_server.minio().list_objects(s3_backend["s3_bucket"], recursive=True))
    assert objects == []  # probe removed


def test_test_s3_missing_bucket_is_success_false(client, s3_backend):
    resp = client.post(f"{API}/storage/test", json={**s3_backend, "s3_bucket": "qbm-no-such-bucket-x1"})
    assert resp.status_code == 200
    result = result_of(resp)
    assert result["success"] is False
    assert "qbm-no-such-bucket-x1" in result["message"]
    assert s3_backend["s3_secret_key"] not in result["message"]


def test_test_s3_unreachable_endpoint_is_success_false(client, s3_backend):
    from tests.api.helpers import closed_port_url

    resp = client.post(f"{API}/storage/test", json={**s3_backend, "s3_endpoint": closed_port_url()})
    assert resp.status_code == 200
    assert result_of(resp)["success"] is False


def test_test_s3_invalid_input_is_422(client, s3_backend):
    body = dict(s3_backend)
    del body["s3_bucket"]
    resp = client.post(f"{API}/storage/test", json=body)
    assert resp.status_code == 422
    assert error_of(resp).startswith("s3_bucket:")


# --- Redis down ---------------------------------------------------------------------------------------


def test_redis_down_is_503(no_redis_client, storage_root):
    for method, path, body in (
        ("GET", "/storage", None),
        ("POST", "/storage", {"name": "n", "type": "local", "path": str(storage_root)}),
        ("GET", "/storage/st_000000000000", None),
        ("PUT", "/storage/st_000000000000", {"name": "x"}),
        ("DELETE", "/storage/st_000000000000", None),
    ):
        resp = no_redis_client.open(f"{API}{path}", method, json=body)
        assert resp.status_code == 503, (method, path)
        assert "Redis" in error_of(resp)


def test_delete_of_a_backend_holding_backups_needs_force_and_keeps_the_backups(client, local_storage, storage_root):
    backend = local_storage("holding", is_default=True)  # the default one, too
    storage = LocalStorage(storage_root / "holding")
    for day in (1, 2, 3):
        put_backup(storage, "docs", datetime(2026, 11, day, tzinfo=UTC))

    refused = client.delete(f"{API}/storage/{backend['id']}")
    assert refused.status_code == 409
    assert error_of(refused).startswith(f"storage backend {backend['id']} holds 3 backup(s);")
    assert "?force=true" in error_of(refused)
    assert client.get(f"{API}/storage/{backend['id']}").status_code == 200  # still there

    forced = client.delete(f"{API}/storage/{backend['id']}?force=true")
    assert forced.status_code == 200
    assert client.get(f"{API}/storage/{backend['id']}").status_code == 404
    assert len(list(manifest_refs(storage))) == 3  # the backups themselves are never deleted


def test_delete_of_an_empty_backend_needs_no_force(client, local_storage):
    backend = local_storage("empty")
    assert client.delete(f"{API}/storage/{backend['id']}").status_code == 200


def test_two_backends_cannot_share_a_name(client, local_storage, storage_root):
    first = local_storage("disk")
    again = client.post(f"{API}/storage", json={"name": "disk", "type": "local", "path": str(storage_root / "x")})
    assert again.status_code == 409
    assert error_of(again) == f"name: a storage backend named 'disk' already exists ({first['id']})"
    other = local_storage("other", is_default=False)
    renamed = client.put(f"{API}/storage/{other['id']}", json={"name": "disk"})
    assert renamed.status_code == 409
    assert client.put(f"{API}/storage/{first['id']}", json={"name": "disk"}).status_code == 200  # its own name
