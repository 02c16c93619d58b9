"""Scheduled backups end to end: real ``qbm scheduler`` and ``qbm worker`` processes, real Redis, the Qdrant
double, local storage. Schedules are made through the API; what is checked is what a user sees: jobs, their
results, backups in storage and in GET /backups."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from shared.records.job_store import JobStore
from shared.runtime.timeutil import parse_iso
from shared.schedules.store import ScheduleStore
from tests.engine.conftest import SchedulerProcess, wait_for_job
from tests.engine.test_roundtrip import post_job, register_storage, storage_backend
from tests.waiting import wait_until

LEASE_SECONDS = 3


@pytest.fixture
def start_scheduler(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], SchedulerProcess]]:
    started: list[SchedulerProcess] = []
    env = dict(worker_env, QBM_SCHEDULER_LEASE_SECONDS=str(LEASE_SECONDS))

    def start() -> SchedulerProcess:
        process = SchedulerProcess(env, tmp_path / f"scheduler-{len(started)}.log").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def schedules(engine_config) -> ScheduleStore:  # noqa: ANN001
    from shared.adapters.redis_conn import connect

    return ScheduleStore(connect(engine_config.redis_url), engine_config.key_prefix)


def leader_pid(redis_client, prefix: str) -> int | None:  # noqa: ANN001
    holder = redis_client.get(f"{prefix}scheduler:leader")
    return int(holder.decode().split(":")[1]) if holder else None


def schedule_jobs(jobs: JobStore, schedule_id: str) -> list[dict]:
    items, _ = jobs.list(limit=1000)
    return [j.to_dict() for j in items if j.metadata.get("schedule_id") == schedule_id]


def create_schedule(client, **body) -> dict:  # noqa: ANN001
    response = client.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["result"]


def test_interval_schedule_backs_up_both_collections(client, jobs, qdrant, worker, engine_config, app,  # noqa: ANN001
                                                      start_scheduler, schedules):
    storage_cfg = register_storage(client, "local", engine_config)
    qdrant.create_collection("alpha", points=30)
    qdrant.create_collection("beta", points=40)
    scheduler = start_scheduler()
    schedule = create_schedule(client, name="every-10s", interval_seconds=10, collections=["alpha", "beta"])

    wait_until(lambda: len(schedule_jobs(jobs, schedule["id"])) >= 2, timeout=30, what="the first tick's jobs",
               details=lambda: f"\nscheduler log:\n{scheduler.log()[-3000:]}")
    first_tick = min(j["metadata"]["scheduled_for"] for j in schedule_jobs(jobs, schedule["id"]))
    tick_jobs = [j for j in schedule_jobs(jobs, schedule["id"]) if j["metadata"]["scheduled_for"] == first_tick]
    assert sorted(j["collection_name"] for j in tick_jobs) == ["alpha", "beta"]
    assert all(j["type"] == "backup" and j["metadata"]["storage_id"] == storage_cfg["id"] for j in tick_jobs)
    # Ticks count from the schedule's creation, every 10 s.
    since = (parse_iso(first_tick) - parse_iso(schedule["created_at"])).total_seconds()
    assert since > 0 and since % 10 == 0

    done = [wait_for_job(jobs, j["id"], worker=worker) for j in tick_jobs]
    assert [j["status"] for j in done] == ["completed", "completed"]
    storage = storage_backend(app, storage_cfg["id"])
    for job in done:
        assert storage.exists(f"{job['collection_name']}/{job['snapshot_name']}/manifest.json")
    listed = client.get("/api/v1/backups").get_json()["result"]["items"]
    assert {j["snapshot_name"] for j in done} <= {b["backup_id"] for b in listed}

    # The scheduler picks up a change made through the API within 5 s (it logs each version it applies).
    client.put(f"/api/v1/schedules/{schedule['id']}", json={"enabled": False})
    version = schedules.version()
    wait_until(lambda: f"schedules in effect: 0 (version {version})" in scheduler.log(), timeout=5,
               what="the scheduler to apply the change", details=lambda: f"\n{scheduler.log()[-3000:]}")
    last_run = client.get(f"/api/v1/schedules/{schedule['id']}").get_json()["result"]["last_run"]
    assert last_run["manual"] is False and len(last_run["job_ids"]) == 2


def test_two_schedulers_fire_each_tick_once_and_survive_the_leader(client, jobs, engine_config, redis_client,  # noqa: ANN001
                                                                     start_scheduler, qdrant):
    register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=5)
    prefix = engine_config.key_prefix
    first = start_scheduler()
    wait_until(lambda: leader_pid(redis_client, prefix) == first.pid, timeout=15, what="the first to lead",
               details=lambda: first.log()[-2000:])
    second = start_scheduler()
    schedule = create_schedule(client, name="ha", interval_seconds=10, collections=["docs"])

    def ticks() -> list[str]:
        return [j["metadata"]["scheduled_for"] for j in schedule_jobs(jobs, schedule["id"])]

    def logs() -> str:
        return f"\nfirst:\n{first.log()[-2000:]}\nsecond:\n{second.log()[-2000:]}"

    wait_until(lambda: len(set(ticks())) >= 4, timeout=60, what="four ticks", details=logs)
    assert leader_pid(redis_client, prefix) == first.pid
    first.kill()  # right after a tick: the next one is ~10 s away
    killed_at = time.time()
    fired_before = len(set(ticks()))
    wait_until(lambda: leader_pid(redis_client, prefix) == second.pid, timeout=LEASE_SECONDS + 5,
               what="the second to take over", details=logs)
    wait_until(lambda: len(set(ticks())) >= fired_before + 2, timeout=35, what="two more ticks", details=logs)

    all_ticks = ticks()
    counts = Counter(all_ticks)
    assert len(counts) >= 6
    assert all(n == 1 for n in counts.values()), f"a tick fired twice: {counts}"
    instants = sorted(parse_iso(t) for t in counts)
    assert all(b - a == timedelta(seconds=10) for a, b in zip(instants, instants[1:], strict=False)), instants
    assert instants[-1].timestamp() > killed_at  # fired by the survivor


def test_retention_deletes_only_its_own_unpinned_backups(client, jobs, qdrant, worker, app,  # noqa: ANN001
                                                         engine_config):
    """The issue's case: a schedule with keep_last: 2 must not take backups made by hand (nor another schedule's,
    nor a pinned one of its own)."""
    storage_cfg = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=20)
    qdrant.create_collection("other", points=5)
    by_hand = [wait_for_job(jobs, post_job(client, type="backup", collection_name=name)["id"], worker=worker)
               for name in ("docs", "docs", "other")]
    assert all(job["status"] == "completed" for job in by_hand), by_hand
    neighbour = create_schedule(client, name="neighbour", interval_seconds=3600, collections=["docs"])
    theirs = wait_for_job(jobs, client.post(f"/api/v1/schedules/{neighbour['id']}/run").get_json()["result"]
                          ["job_ids"][0], worker=worker)
    schedule = create_schedule(client, name="keep2", interval_seconds=3600, collections=["docs"],
                               retention={"keep_last": 2})
    made = []
    for run in range(4):
        started = client.post(f"/api/v1/schedules/{schedule['id']}/run").get_json()["result"]
        done = wait_for_job(jobs, started["job_ids"][0], worker=worker)
        assert done["status"] == "completed", done
        made.append(done)
        if run == 0:  # the schedule's first backup is pinned: kept, and not counted in keep_last
            pinned = client.put(f"/api/v1/backups/{storage_cfg['id']}/{done['snapshot_name']}/pin")
            assert pinned.status_code == 200 and pinned.get_json()["result"]["pinned"] is True

    listed = {b["backup_id"]: b for b in client.get("/api/v1/backups?limit=100").get_json()["result"]["items"]}
    kept_own = {made[0]["snapshot_name"], made[2]["snapshot_name"], made[3]["snapshot_name"]}
    others = {job["snapshot_name"] for job in [*by_hand, theirs]}
    assert set(listed) == kept_own | others  # only made[1] went
    assert all(listed[job["snapshot_name"]]["schedule_id"] is None for job in by_hand)
    assert listed[theirs["snapshot_name"]]["schedule_id"] == neighbour["id"]
    assert {listed[b]["schedule_id"] for b in kept_own} == {schedule["id"]}
    assert [b for b, item in listed.items() if item["pinned"]] == [made[0]["snapshot_name"]]
    storage = storage_backend(app, storage_cfg["id"])
    in_storage = {info.key.split("/")[1] for info in storage.list("docs/")}
    assert in_storage == kept_own | others - {by_hand[2]["snapshot_name"]}  # data gone too, not only manifests
    # The backup that made the deletion says so; the one before had nothing of its own to delete.
    assert "retention_deleted" not in jobs.get(made[2]["id"]).metadata
    assert jobs.get(made[3]["id"]).metadata["retention_deleted"] == [made[1]["snapshot_name"]]


def test_catalog_survives_losing_the_job_records(client, jobs, qdrant, worker, engine_config, redis_client):  # noqa: ANN001
    storage_cfg = register_storage(client, "local", engine_config)
    qdrant.create_collection("docs", points=20)
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="docs")["id"], worker=worker)
    assert done["status"] == "completed"

    prefix = engine_config.key_prefix
    job_keys = [*redis_client.scan_iter(match=f"{prefix}job:*"), *redis_client.scan_iter(match=f"{prefix}jobs:*")]
    assert job_keys
    redis_client.delete(*job_keys)
    assert jobs.list() == ([], 0)

    listed = client.get("/api/v1/backups").get_json()["result"]
    assert [b["backup_id"] for b in listed["items"]] == [done["snapshot_name"]]
    one = client.get(f"/api/v1/backups/{storage_cfg['id']}/{done['snapshot_name']}").get_json()["result"]
    assert one["job_id"] == done["id"] and one["sha256"] == done["metadata"]["sha256"]
