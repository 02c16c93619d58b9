"""Jobs: create (validation, default storage, hand-off to the workers), list, get, cancel, retry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.adapters.storage import LocalStorage
from shared.records.job_store import JobStore
from tests.api.helpers import API, error_of, result_of
from tests.backup_factory import put_backup

JOB_FIELDS = {"id", "type", "status", "collection_name", "shard_id", "snapshot_name", "progress", "error",
              "metadata", "created_at", "started_at", "completed_at"}


@pytest.fixture
def client(make_client):
    """These endpoints never talk to Qdrant: no double needed (its shutdown costs ~0.5 s per test)."""
    return make_client()


@pytest.fixture
def store(redis_client, key_prefix):
    return JobStore(redis_client, key_prefix)


@pytest.fixture
def default_storage(local_storage):
    return local_storage("default-disk", is_default=True)


@pytest.fixture
def checked(make_client, qdrant):
    """The app against the Qdrant double, where collection ``a`` (3 shards) and ``alpha`` exist, so the checks
    made at submission pass."""
    qdrant.create_collection("a", points=3, shard_number=3)
    qdrant.create_collection("alpha", points=3)
    return make_client(qdrant_url=qdrant.url)


def _backup_in(storage_cfg, collection="a", *, shard_id=None):
    """A backup in a local backend, as a worker leaves it; returns its backup id."""
    return put_backup(LocalStorage(storage_cfg["path"]), collection, datetime(2026, 11, 24, 2, 15, tzinfo=UTC),
                      shard_id=shard_id).backup_id


def _create(client, **body):
    resp = client.post(f"{API}/jobs", json=body)
    assert resp.status_code == 201, resp.get_json()
    return result_of(resp)


# --- create -------------------------------------------------------------------------------------------


def test_create_backup_uses_the_default_storage_and_enqueues(checked, default_storage, enqueued, store):
    client = checked
    job = _create(client, type="backup", collection_name="alpha")
    assert set(job) == JOB_FIELDS
    assert job["status"] == "pending"
    assert job["type"] == "backup"
    assert job["progress"] == 0
    assert job["shard_id"] is None and job["snapshot_name"] is None and job["error"] is None
    assert job["metadata"] == {"storage_id": default_storage["id"]}
    assert job["created_at"].endswith("Z")
    assert enqueued == [job["id"]]
    assert store.get(job["id"]).to_dict() == job


def test_create_each_type(checked, default_storage, enqueued):
    client = checked
    collection_backup, shard_backup_id = _backup_in(default_storage), _backup_in(default_storage, shard_id=0)
    backup = _create(client, type="backup", collection_name="a")
    shard_backup = _create(client, type="shard_backup", collection_name="a", shard_id=2)
    restore = _create(client, type="restore", collection_name="a", snapshot_name=collection_backup,
                      metadata={"target_collection": "a_copy", "priority": "replica",
                                "note": {"free": "form"}})
    shard_restore = _create(client, type="shard_restore", collection_name="a", shard_id=0,
                            snapshot_name=shard_backup_id)
    assert shard_backup["shard_id"] == 2
    assert restore["snapshot_name"] == collection_backup
    assert restore["metadata"] == {"target_collection": "a_copy", "priority": "replica",
                                   "note": {"free": "form"}, "storage_id": default_storage["id"]}
    assert shard_restore["snapshot_name"] == shard_backup_id
    assert enqueued == [backup["id"], shard_backup["id"], restore["id"], shard_restore["id"]]


def test_create_with_an_explicit_storage(client, local_storage, enqueued):
    local_storage("default", is_default=True)
    other = local_storage("other", is_default=False)
    job = _create(client, type="backup", collection_name="a", metadata={"storage_id": other["id"]})
    assert job["metadata"]["storage_id"] == other["id"]


def test_create_without_any_default_storage_is_422(client, enqueued):
    resp = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "a"})
    assert resp.status_code == 422
    assert error_of(resp).startswith("metadata.storage_id:")
    assert enqueued == []


@pytest.mark.parametrize("storage_id", ["st_000000000000", "default", "../../x"])
def test_create_with_unknown_storage_is_422(client, default_storage, enqueued, storage_id):
    resp = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "a",
                                            "metadata": {"storage_id": storage_id}})
    assert resp.status_code == 422
    assert error_of(resp).startswith("metadata.storage_id:")
    assert enqueued == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"collection_name": "a"}, "type"),
        ({"type": "snapshot", "collection_name": "a"}, "type"),
        ({"type": "backup"}, "collection_name"),
        ({"type": "backup", "collection_name": "a b"}, "collection_name"),
        ({"type": "backup", "collection_name": ""}, "collection_name"),
        ({"type": "backup", "collection_name": ".."}, "collection_name"),
        ({"type": "backup", "collection_name": "a", "shard_id": 1}, "shard_id"),
        ({"type": "shard_backup", "collection_name": "a"}, "shard_id"),
        ({"type": "shard_backup", "collection_name": "a", "shard_id": -1}, "shard_id"),
        ({"type": "shard_backup", "collection_name": "a", "shard_id": "1"}, "shard_id"),
        ({"type": "shard_backup", "collection_name": "a", "shard_id": 1.5}, "shard_id"),
        ({"type": "shard_backup", "collection_name": "a", "shard_id": True}, "shard_id"),
        ({"type": "shard_backup", "collection_name": "a", "shard_id": 2**32}, "shard_id"),
        ({"type": "restore", "collection_name": "a"}, "snapshot_name"),
        ({"type": "restore", "collection_name": "a", "snapshot_name": "../etc/passwd"}, "snapshot_name"),
        ({"type": "restore", "collection_name": "a", "snapshot_name": "a..b"}, "snapshot_name"),
        ({"type": "restore", "collection_name": "a", "snapshot_name": "a/b"}, "snapshot_name"),
        ({"type": "restore", "collection_name": "a", "snapshot_name": "x" * 201}, "snapshot_name"),
        ({"type": "backup", "collection_name": "a", "snapshot_name": "x.snapshot"}, "snapshot_name"),
        ({"type": "shard_restore", "collection_name": "a", "snapshot_name": "s"}, "shard_id"),
        ({"type": "backup", "collection_name": "a", "metadata": []}, "metadata"),
        ({"type": "backup", "collection_name": "a", "metadata": {"storage_id": 5}}, "metadata.storage_id"),
        ({"type": "backup", "collection_name": "a", "metadata": {"priority": "replica"}},
         "metadata.priority"),
        ({"type": "backup", "collection_name": "a", "metadata": {"target_collection": "b"}},
         "metadata.target_collection"),
        ({"type": "restore", "collection_name": "a", "snapshot_name": "s", "metadata": {"priority": "fast"}},
         "metadata.priority"),
        ({"type": "restore", "collection_name": "a", "snapshot_name": "s",
          "metadata": {"target_collection": "no/slash"}}, "metadata.target_collection"),
        ({"type": "backup", "collection_name": "a", "extra": 1}, "extra"),
    ],
)
def test_create_validation(client, default_storage, enqueued, body, field):
    resp = client.post(f"{API}/jobs", json=body)
    assert resp.status_code == 422, resp.get_json()
    assert error_of(resp).startswith(f"{field}:"), error_of(resp)
    assert enqueued == []


def test_create_malformed_requests(client, default_storage, enqueued):
    assert client.post(f"{API}/jobs", data="{\"type\":", content_type="application/json").status_code == 400
    assert client.post(f"{API}/jobs", data=b"\xff\xfe", content_type="application/json").status_code == 400
    nan = '{"type": "backup", "collection_name": "a", "metadata": {"x": NaN}}'
    resp = client.post(f"{API}/jobs", data=nan, content_type="application/json")
    assert resp.status_code == 422
    assert error_of(resp).startswith("metadata:")
    assert client.post(f"{API}/jobs", data="type=backup").status_code == 415
    assert client.post(f"{API}/jobs", json="backup").status_code == 422
    assert enqueued == []


def test_enqueue_failure_cancels_the_job_and_answers_503(make_client, qdrant, local_storage, store):
    def broken(job_id: str, new_job_type: str | None = None) -> None:
        raise ConnectionError("broker is down")

    local_storage("disk", is_default=True)  # through another app on the same Redis prefix
    qdrant.create_collection("a")
    client = make_client(qdrant_url=qdrant.url, enqueue=broken)
    resp = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "a"})
    assert resp.status_code == 503
    [job], total = store.list()
    assert total == 1
    assert job.status == "cancelled"
    assert "could not be handed to the workers" in job.error


# --- list ---------------------------------------------------------------------------------------------


def test_list_is_bare_paginated_and_newest_first(client, default_storage):
    ids = [_create(client, type="backup", collection_name=f"c{i}")["id"] for i in range(5)]
    resp = client.get(f"{API}/jobs?limit=2")
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"items", "total", "page", "limit"}
    assert body["total"] == 5 and body["page"] == 1 and body["limit"] == 2
    assert [j["id"] for j in body["items"]] == ids[::-1][:2]
    page3 = client.get(f"{API}/jobs?limit=2&page=3").get_json()
    assert [j["id"] for j in page3["items"]] == [ids[0]]
    beyond = client.get(f"{API}/jobs?limit=2&page=9").get_json()
    assert beyond["items"] == [] and beyond["total"] == 5


def test_list_defaults(client):
    body = client.get(f"{API}/jobs").get_json()
    assert body == {"items": [], "total": 0, "page": 1, "limit": 20}


def test_list_far_past_the_end_is_empty(client, default_storage):
    _create(client, type="backup", collection_name="a")
    body = client.get(f"{API}/jobs?page=99999999999999999999&limit=100").get_json()
    assert body["items"] == [] and body["total"] == 1 and body["page"] == 99999999999999999999


def test_list_filters(client, default_storage, store):
    backup = _create(client, type="backup", collection_name="a")
    restore = _create(client, type="restore", collection_name="a", snapshot_name=_backup_in(default_storage))
    store.transition(backup["id"], "running")
    by_status = client.get(f"{API}/jobs?status=running").get_json()
    assert [j["id"] for j in by_status["items"]] == [backup["id"]]
    by_type = client.get(f"{API}/jobs?type=restore").get_json()
    assert [j["id"] for j in by_type["items"]] == [restore["id"]]
    both = client.get(f"{API}/jobs?type=restore&status=running").get_json()
    assert both["items"] == [] and both["total"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [("page=0", "page"), ("page=x", "page"), ("limit=0", "limit"), ("limit=101", "limit"),
     ("status=done", "status"), ("type=full", "type")],
)
def test_list_validation(client, query, field):
    resp = client.get(f"{API}/jobs?{query}")
    assert resp.status_code == 422
    assert error_of(resp).startswith(f"{field}:")


# --- get ----------------------------------------------------------------------------------------------


def test_get(client, default_storage):
    job = _create(client, type="backup", collection_name="a")
    assert result_of(client.get(f"{API}/jobs/{job['id']}")) == job


@pytest.mark.parametrize("job_id", ["0000000000000000deadbeef00", "x" * 100, "a.b"])
def test_get_unknown_is_404(client, job_id):
    resp = client.get(f"{API}/jobs/{job_id}")
    assert resp.status_code == 404
    assert "not found" in error_of(resp)


# --- cancel -------------------------------------------------------------------------------------------


def test_cancel_pending_and_running(client, default_storage, store):
    pending = _create(client, type="backup", collection_name="a")
    resp = client.post(f"{API}/jobs/{pending['id']}/cancel")
    assert resp.status_code == 200
    cancelled = result_of(resp)
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    running = _create(client, type="backup", collection_name="a")
    store.transition(running["id"], "running")
    assert result_of(client.post(f"{API}/jobs/{running['id']}/cancel"))["status"] == "cancelled"


@pytest.mark.parametrize("path", [["running", "completed"], ["running", "failed"], ["cancelled"]])
def test_cancel_finished_job_is_409(client, default_storage, store, path):
    job = _create(client, type="backup", collection_name="a")
    for status in path:
        store.transition(job["id"], status)
    resp = client.post(f"{API}/jobs/{job['id']}/cancel")
    assert resp.status_code == 409
    assert path[-1] in error_of(resp)
    assert store.get(job["id"]).status == path[-1]


def test_cancel_unknown_is_404(client):
    assert client.post(f"{API}/jobs/0000000000000000deadbeef00/cancel").status_code == 404


# --- retry --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [["running", "failed"], ["cancelled"], ["running", "cancelled"]])
def test_retry_failed_or_cancelled(client, default_storage, store, enqueued, path):
    job = _create(client, type="backup", collection_name="a")
    for status in path:
        store.transition(job["id"], status, error="boom" if status == "failed" else None)
    resp = client.post(f"{API}/jobs/{job['id']}/retry")
    assert resp.status_code == 200
    retried = result_of(resp)
    assert retried["status"] == "pending"
    assert retried["error"] is None and retried["completed_at"] is None
    assert enqueued == [job["id"], job["id"]]


@pytest.mark.parametrize("path", [[], ["running"], ["running", "completed"]])
def test_retry_active_or_completed_is_409(client, default_storage, store, enqueued, path):
    job = _create(client, type="backup", collection_name="a")
    for status in path:
        store.transition(job["id"], status)
    resp = client.post(f"{API}/jobs/{job['id']}/retry")
    assert resp.status_code == 409
    assert enqueued == [job["id"]]


def test_retry_unknown_is_404(client):
    assert client.post(f"{API}/jobs/0000000000000000deadbeef00/retry").status_code == 404


# --- Redis down ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/jobs", None),
        ("POST", "/jobs", {"type": "backup", "collection_name": "a"}),
        ("GET", "/jobs/0000000000000000deadbeef00", None),
        ("POST", "/jobs/0000000000000000deadbeef00/cancel", None),
        ("POST", "/jobs/0000000000000000deadbeef00/retry", None),
    ],
)
def test_redis_down_is_503(no_redis_client, enqueued, method, path, body):
    resp = no_redis_client.open(f"{API}{path}", method, json=body)
    assert resp.status_code == 503
    assert "Redis" in error_of(resp)
    assert enqueued == []


def test_a_cancelled_job_says_so_and_its_progress_stays_where_it_stopped(client, store):
    job = store.create("backup", "docs", metadata={"storage_id": "st_x"})
    store.transition(job.id, "running")
    store.set_progress(job.id, 42)
    resp = client.post(f"{API}/jobs/{job.id}/cancel")
    assert resp.status_code == 200
    assert (result_of(resp)["status"], result_of(resp)["error"]) == ("cancelled", "cancelled by request")
    store.set_progress(job.id, 57)  # the worker's last report, arriving after the cancel
    assert result_of(client.get(f"{API}/jobs/{job.id}"))["progress"] == 42
    retried = client.post(f"{API}/jobs/{job.id}/retry")
    assert (result_of(retried)["error"], result_of(retried)["progress"]) == (None, 0)


def test_job_metadata_is_bounded_and_the_refusal_states_the_limit(client, default_storage, store):
    resp = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "alpha",
                                            "metadata": {"note": "x" * 20_000}})
    assert resp.status_code == 422
    assert error_of(resp) == "metadata: must be at most 16384 bytes as JSON, got 20011"
    assert store.list()[1] == 0  # nothing stored
    ok = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "alpha",
                                          "metadata": {"note": "x" * 10_000}})
    assert ok.status_code == 201


@pytest.fixture
def redis_without_the_queues(redis_url, key_prefix, redis_client):
    """A Redis user that may write QBM's records under the test's prefix but not Dramatiq's queues: the real
    broker's enqueue then fails (NOPERM) after the job was stored, as when the queues' Redis is lost."""
    user, password = f"qbmtest-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    patterns = [f"~{key_prefix}{name}" for name in ("job:*", "jobs:*", "storage:*", "storages:*")]
    redis_client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "resetkeys", *patterns, "+@all")
    parsed = urlsplit(redis_url)
    yield urlunsplit(parsed._replace(netloc=f"{user}:{password}@{parsed.hostname}:{parsed.port or 6379}"))
    redis_client.execute_command("ACL", "DELUSER", user)


def test_a_real_enqueue_failure_cancels_the_stored_job_and_answers_503(make_client, qdrant, local_storage, store,
                                                                       redis_without_the_queues):
    local_storage("disk", is_default=True)
    qdrant.create_collection("a")
    client = make_client(qdrant_url=qdrant.url, redis_url=redis_without_the_queues, real_enqueue=True)
    resp = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "a"})
    assert resp.status_code == 503
    assert error_of(resp).endswith("could not be handed to the workers; it is cancelled and can be retried")
    [job], total = store.list()
    assert total == 1 and job.status == "cancelled"
    assert job.error.startswith("could not be handed to the workers: ") and "permission" in job.error.lower()


# --- checked at submission ----------------------------------------------------------------------------


def test_jobs_that_cannot_work_are_refused_with_the_sentence_the_job_would_fail_with(checked, default_storage,
                                                                                      store, enqueued, qdrant):
    client = checked
    missing = client.post(f"{API}/jobs", json={"type": "backup", "collection_name": "nope"})
    assert missing.status_code == 404
    assert error_of(missing) == ("collection_name: Qdrant has no collection 'nope': Not found: Collection `nope` "
                                 "doesn't exist!")
    no_shard = client.post(f"{API}/jobs", json={"type": "shard_backup", "collection_name": "a", "shard_id": 7})
    assert no_shard.status_code == 422
    assert error_of(no_shard) == "shard_id: collection 'a' has no shard 7 on any Qdrant peer (its shards: 0, 1, 2)"
    no_backup = client.post(f"{API}/jobs", json={"type": "restore", "collection_name": "a",
                                                 "snapshot_name": "20260101T000000Z-00000000"})
    assert no_backup.status_code == 404
    assert error_of(no_backup).startswith("snapshot_name: backup '20260101T000000Z-00000000' of collection 'a' "
                                          "not found in storage")
    shard_one = _backup_in(default_storage, shard_id=1)
    wrong_kind = client.post(f"{API}/jobs", json={"type": "restore", "collection_name": "a",
                                                  "snapshot_name": shard_one})
    assert wrong_kind.status_code == 422
    assert error_of(wrong_kind) == f"snapshot_name: backup {shard_one} is a shard backup; use a shard_restore job"
    wrong_shard = client.post(f"{API}/jobs", json={"type": "shard_restore", "collection_name": "a", "shard_id": 2,
                                                   "snapshot_name": shard_one})
    assert error_of(wrong_shard) == f"snapshot_name: backup {shard_one} holds shard 1, not shard 2"
    assert store.list()[1] == 0 and enqueued == []  # nothing was stored or handed over


def test_a_restore_into_an_existing_collection_needs_replace_true(checked, default_storage, store, enqueued):
    client = checked
    backup_id = _backup_in(default_storage)
    body = {"type": "restore", "collection_name": "a", "snapshot_name": backup_id}
    refused = client.post(f"{API}/jobs", json=body)
    assert refused.status_code == 409
    assert error_of(refused) == ("metadata.replace: collection 'a' already exists on Qdrant and a restore would "
                                 "replace it; set metadata.replace to true to replace it, or restore under another "
                                 "name with metadata.target_collection")
    into_other = client.post(f"{API}/jobs", json={**body, "metadata": {"target_collection": "alpha"}})
    assert into_other.status_code == 409 and "collection 'alpha' already exists" in error_of(into_other)
    assert client.post(f"{API}/jobs", json={**body, "metadata": {"replace": False}}).status_code == 409
    assert store.list()[1] == 0 and enqueued == []

    replacing = _create(client, **body, metadata={"replace": True})
    assert replacing["metadata"]["replace"] is True and "unchecked" not in replacing["metadata"]
    fresh = _create(client, **body, metadata={"target_collection": "a-copy"})  # no such collection: nothing to ask
    assert enqueued == [replacing["id"], fresh["id"]]


@pytest.mark.parametrize(
    ("job", "message"),
    [({"type": "restore", "snapshot_name": "s", "metadata": {"replace": "yes"}}, "must be true or false"),
     ({"type": "backup", "metadata": {"replace": True}}, "only applies to restore jobs"),
     ({"type": "shard_restore", "shard_id": 0, "snapshot_name": "s", "metadata": {"replace": True}},
      "only applies to restore jobs (a shard_restore always replaces its shard)")],
)
def test_replace_must_be_a_boolean_of_a_restore(client, job, message):
    resp = client.post(f"{API}/jobs", json={"collection_name": "a", **job})
    assert resp.status_code == 422 and error_of(resp).startswith(f"metadata.replace: {message}")


def test_a_restore_whose_target_cannot_be_checked_is_stored_and_says_so(client, default_storage):
    job = _create(client, type="restore", collection_name="a", snapshot_name=_backup_in(default_storage))
    assert job["metadata"]["unchecked"].startswith("whether collection 'a' exists could not be checked on Qdrant "
                                                   "at submission: cannot reach Qdrant at ")


def test_a_check_that_cannot_be_made_does_not_block_the_job_and_the_job_says_so(client, default_storage):
    job = _create(client, type="backup", collection_name="alpha")  # this app's Qdrant does not answer
    assert job["status"] == "pending"
    assert job["metadata"]["unchecked"].startswith("the collection could not be checked on Qdrant at submission: "
                                                   "cannot reach Qdrant at ")
