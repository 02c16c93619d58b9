"""Schedules through the API: create/list/get/update/delete, every 422 naming its field, 404s, auth, run now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.records.job_store import JobStore
from shared.records.storage_configs import StorageConfigStore
from shared.runtime.timeutil import parse_iso
from shared.schedules.store import ScheduleStore
from tests.api.helpers import API, error_of, result_of

SCHEDULE_FIELDS = {"id", "name", "cron", "interval_seconds", "timezone", "collections", "type", "storage_id",
                   "retention", "enabled", "created_at", "updated_at", "next_run_time", "last_run"}


@pytest.fixture
def default_storage(local_storage):
    return local_storage("default-disk", is_default=True)


def _create(client, **body):
    resp = client.post(f"{API}/schedules", json=body)
    assert resp.status_code == 201, resp.get_json()
    return result_of(resp)


def test_create_cron_schedule_with_defaults(client, default_storage):
    schedule = _create(client, name="nightly", cron="30 2 * * *", timezone="Europe/Berlin", collections=["docs"])
    assert set(schedule) == SCHEDULE_FIELDS
    assert schedule["id"].startswith("sc_")
    assert schedule["type"] == "backup" and schedule["enabled"] is True
    assert schedule["interval_seconds"] is None and schedule["storage_id"] is None
    assert schedule["retention"] is None and schedule["last_run"] is None
    # The next run is 02:30 Berlin time, in the future, said in UTC.
    nxt = parse_iso(schedule["next_run_time"])
    assert schedule["next_run_time"].endswith("Z")
    local = nxt.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (2, 30)
    assert timedelta(0) < nxt - datetime.now(UTC) <= timedelta(days=1)
    assert client.get(f"{API}/schedules/{schedule['id']}").get_json()["result"] == schedule


def test_cron_weekdays_mean_what_crontab_means(client, default_storage):
    """0 is Sunday in a crontab (APScheduler 3 alone would read it as Monday)."""
    schedule = _create(client, name="sundays", cron="0 3 * * 0", collections=["docs"])
    assert parse_iso(schedule["next_run_time"]).weekday() == 6  # Sunday


def test_interval_schedule_next_run_counts_from_creation(client, default_storage):
    schedule = _create(client, name="often", interval_seconds=10, collections=["a", "b"], type="shard_backup",
                       retention={"keep_last": 3}, storage_id=default_storage["id"], enabled=True)
    assert schedule["cron"] is None and schedule["interval_seconds"] == 10
    assert schedule["retention"] == {"keep_last": 3, "max_age_days": None}
    assert schedule["storage_id"] == default_storage["id"] and schedule["type"] == "shard_backup"
    since = (parse_iso(schedule["next_run_time"]) - parse_iso(schedule["created_at"])).total_seconds()
    assert since % 10 == 0 and 0 < since <= 20


def test_list_update_and_delete(client, default_storage):
    first = _create(client, name="one", cron="0 1 * * *", collections=["*"])
    second = _create(client, name="two", interval_seconds=60, collections=["docs"])
    listed = result_of(client.get(f"{API}/schedules"))
    assert [s["id"] for s in listed] == [first["id"], second["id"]]

    # Partial: only the name changes.
    renamed = result_of(client.put(f"{API}/schedules/{first['id']}", json={"name": "renamed"}))
    assert renamed["name"] == "renamed" and renamed["cron"] == "0 1 * * *"
    # Switching to an interval clears cron (and back).
    switched = result_of(client.put(f"{API}/schedules/{first['id']}", json={"interval_seconds": 30}))
    assert switched["cron"] is None and switched["interval_seconds"] == 30
    back = result_of(client.put(f"{API}/schedules/{first['id']}", json={"cron": "15 4 * * 1-5"}))
    assert back["interval_seconds"] is None and back["cron"] == "15 4 * * 1-5"
    # Disabled: no next run. Retention removed with null.
    off = result_of(client.put(f"{API}/schedules/{second['id']}",
                               json={"enabled": False, "retention": {"max_age_days": 7}}))
    assert off["enabled"] is False and off["next_run_time"] is None
    assert off["retention"] == {"keep_last": None, "max_age_days": 7}
    cleared = result_of(client.put(f"{API}/schedules/{second['id']}", json={"retention": None}))
    assert cleared["retention"] is None

    resp = client.delete(f"{API}/schedules/{first['id']}")
    assert resp.status_code == 200 and result_of(resp) is True
    assert client.get(f"{API}/schedules/{first['id']}").status_code == 404
    assert [s["id"] for s in result_of(client.get(f"{API}/schedules"))] == [second["id"]]


def test_every_change_moves_the_version_the_scheduler_watches(client, default_storage, redis_client, key_prefix):
    store = ScheduleStore(redis_client, key_prefix)
    before = store.version()
    schedule = _create(client, name="v", interval_seconds=10, collections=["docs"])
    after_create = store.version()
    client.put(f"{API}/schedules/{schedule['id']}", json={"collections": ["docs", "more"]})
    after_update = store.version()
    client.delete(f"{API}/schedules/{schedule['id']}")
    assert before < after_create < after_update < store.version()


VALID = {"name": "n", "cron": "0 2 * * *", "collections": ["docs"]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "61 2 * * *"}, "cron"),
        ({"cron": "0 2 * *"}, "cron"),
        ({"cron": "0 2 * * 8"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # never fires
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"storage_id": "st_000000000000"}, "storage_id"),
        ({"storage_id": "default"}, "storage_id"),
        ({"retention": {"keep_last": 0}}, "retention.keep_last"),
        ({"retention": {"keep_last": -3}}, "retention.keep_last"),
        ({"retention": {"max_age_days": 0}}, "retention.max_age_days"),
        ({"retention": {"keep": 2}}, "retention.keep"),
        ({"cron": None, "interval_seconds": 5}, "interval_seconds"),
        ({"interval_seconds": 60}, "interval_seconds"),  # both given
        ({"cron": None}, "cron"),  # neither given
        ({"collections": []}, "collections"),
        ({"collections": ["*", "docs"]}, "collections"),
        ({"collections": ["a b"]}, "collections"),
        ({"collections": [".."]}, "collections"),
        ({"type": "restore"}, "type"),
        ({"name": ""}, "name"),
        ({"enabled": "maybe"}, "enabled"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_schedules_are_422_naming_the_field(client, default_storage, changes, field, redis_client,
                                                    key_prefix):
    body = {**VALID, **changes}
    body = {k: v for k, v in body.items() if not (k == "cron" and v is None)}
    resp = client.post(f"{API}/schedules", json=body)
    assert resp.status_code == 422, resp.get_json()
    assert error_of(resp).startswith(f"{field}:"), error_of(resp)
    assert ScheduleStore(redis_client, key_prefix).list() == []


def test_invalid_update_is_422_and_changes_nothing(client, default_storage):
    schedule = _create(client, **VALID)
    for body, field in (({"cron": "0 25 * * *"}, "cron"), ({"timezone": "Nowhere/Land"}, "timezone"),
                        ({"retention": {"keep_last": 0}}, "retention.keep_last"),
                        ({"storage_id": "st_0123456789ab"}, "storage_id")):
        resp = client.put(f"{API}/schedules/{schedule['id']}", json=body)
        assert resp.status_code == 422
        assert error_of(resp).startswith(f"{field}:")
    assert result_of(client.get(f"{API}/schedules/{schedule['id']}")) == schedule


@pytest.mark.parametrize("schedule_id", ["sc_000000000000", "nope", "sc_..x", "sc_%20x"])
def test_unknown_schedule_is_404(client, schedule_id):
    for method in ("get", "put", "delete"):
        kwargs = {"json": {"name": "x"}} if method == "put" else {}
        resp = getattr(client, method)(f"{API}/schedules/{schedule_id}", **kwargs)
        assert resp.status_code == 404, (method, resp.get_json())
        assert "not found" in error_of(resp)
    assert client.post(f"{API}/schedules/{schedule_id}/run").status_code == 404


def test_schedules_need_a_key_when_keys_are_configured(make_client):
    secured = make_client(api_keys=("k-123456",))
    assert secured.get(f"{API}/schedules").status_code == 401
    assert secured.post(f"{API}/schedules", json=VALID).status_code == 401
    ok = secured.get(f"{API}/schedules", headers={"X-API-Key": "k-123456"})
    assert ok.status_code == 200 and result_of(ok) == []


# --- run now ------------------------------------------------------------------------------------------


def test_run_now_creates_one_job_per_collection_through_the_jobs_code_path(client, default_storage, enqueued,
                                                                           redis_client, key_prefix, qdrant):
    qdrant.create_collection("a")
    qdrant.create_collection("b")
    schedule = _create(client, name="pair", interval_seconds=3600, collections=["a", "b"])
    resp = client.post(f"{API}/schedules/{schedule['id']}/run")
    assert resp.status_code == 200
    run = result_of(resp)
    assert run["status"] == "running" and run["manual"] is True and run["error"] is None
    assert len(run["job_ids"]) == 2 and enqueued == run["job_ids"]
    jobs = JobStore(redis_client, key_prefix)
    created = [jobs.get(job_id).to_dict() for job_id in run["job_ids"]]
    assert [(j["type"], j["collection_name"], j["status"]) for j in created] == [
        ("backup", "a", "pending"), ("backup", "b", "pending")]
    # Same records as POST /jobs: the default storage resolved into metadata, plus the schedule's id.
    assert all(j["metadata"] == {"schedule_id": schedule["id"], "storage_id": default_storage["id"]}
               for j in created)
    assert result_of(client.get(f"{API}/schedules/{schedule['id']}"))["last_run"] == run

    # last_run's status follows the jobs.
    for job in created:
        jobs.transition(job["id"], "running")
        jobs.transition(job["id"], "completed")
    assert result_of(client.get(f"{API}/schedules/{schedule['id']}"))["last_run"]["status"] == "completed"
    jobs.delete(created[0]["id"])
    jobs.create("backup", "x")  # unrelated
    again = result_of(client.post(f"{API}/schedules/{schedule['id']}/run"))
    jobs.transition(again["job_ids"][0], "cancelled")
    jobs.transition(again["job_ids"][1], "running")
    jobs.transition(again["job_ids"][1], "completed")
    assert result_of(client.get(f"{API}/schedules/{schedule['id']}"))["last_run"]["status"] == "failed"


def test_run_now_of_a_shard_schedule_over_every_collection(client, default_storage, qdrant, enqueued,
                                                          redis_client, key_prefix):
    qdrant.create_collection("alpha", shard_number=2)
    qdrant.create_collection("beta", shard_number=1)
    schedule = _create(client, name="shards", cron="0 3 * * *", collections=["*"], type="shard_backup")
    run = result_of(client.post(f"{API}/schedules/{schedule['id']}/run"))
    jobs = JobStore(redis_client, key_prefix)
    created = sorted((jobs.get(i).collection_name, jobs.get(i).shard_id, jobs.get(i).type)
                     for i in run["job_ids"])
    assert created == [("alpha", 0, "shard_backup"), ("alpha", 1, "shard_backup"), ("beta", 0, "shard_backup")]


def test_run_now_reports_what_could_not_be_created(client, local_storage, qdrant, enqueued, redis_client,
                                                   key_prefix):
    other = local_storage("other", is_default=False)
    schedule = _create(client, name="gone", interval_seconds=3600, collections=["docs"], storage_id=other["id"])
    # The API refuses to delete a backend a schedule uses; one can still vanish (removed from Redis by hand,
    # or deleted by a QBM that did not check yet).
    assert client.delete(f"{API}/storage/{other['id']}").status_code == 409
    StorageConfigStore(redis_client, key_prefix).delete(other["id"])
    run = result_of(client.post(f"{API}/schedules/{schedule['id']}/run"))
    assert run["status"] == "failed" and run["job_ids"] == [] and enqueued == []
    assert "metadata.storage_id" in run["error"] and other["id"] in run["error"]

    # A shard schedule naming a collection Qdrant does not have: the reason, not a crash.
    missing = _create(client, name="missing", interval_seconds=3600, collections=["nope"], type="shard_backup")
    run = result_of(client.post(f"{API}/schedules/{missing['id']}/run"))
    assert run["status"] == "failed" and "nope" in run["error"]

    # A collection schedule naming a collection Qdrant does not have: refused by the same check as POST /jobs.
    local_storage("default-disk", is_default=True)
    vanished = _create(client, name="vanished", interval_seconds=3600, collections=["docs"])
    run = result_of(client.post(f"{API}/schedules/{vanished['id']}/run"))
    assert run["status"] == "failed" and run["job_ids"] == []
    assert "collection_name: Qdrant has no collection 'docs'" in run["error"]
