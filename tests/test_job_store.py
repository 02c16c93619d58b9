"""JobStore against a real Redis: what the API and the workers rely on when they read and move jobs."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from shared.records.job_store import (
    ALLOWED,
    JOB_STATUSES,
    JOB_TYPES,
    PUBLIC_FIELDS,
    Job,
    JobNotFound,
    JobStore,
    StorageMissing,
    StorageRef,
    TransitionError,
)
from shared.runtime import timeutil


@pytest.fixture
def store(redis_client: redis.Redis, key_prefix: str) -> JobStore:
    return JobStore(redis_client, key_prefix)


def all_index_keys(prefix: str) -> list[str]:
    keys = [f"{prefix}jobs:all"]
    keys += [f"{prefix}jobs:status:{s}" for s in JOB_STATUSES]
    keys += [f"{prefix}jobs:type:{t}" for t in JOB_TYPES]
    keys += [f"{prefix}jobs:st:{s}:{t}" for s in JOB_STATUSES for t in JOB_TYPES]
    return keys


def stored_state(client: redis.Redis, prefix: str, job_id: str) -> tuple[dict, dict]:
    """Everything Redis holds about one job: its raw hash and its score in every index."""
    raw = client.hgetall(f"{prefix}job:{job_id}")
    memberships = {key: client.zscore(key, job_id) for key in all_index_keys(prefix)}
    return raw, memberships


def indexes_holding(client: redis.Redis, prefix: str, job_id: str) -> set[str]:
    _, memberships = stored_state(client, prefix, job_id)
    return {key[len(prefix):] for key, score in memberships.items() if score is not None}


def expected_indexes(status: str, type_: str) -> set[str]:
    return {"jobs:all", f"jobs:status:{status}", f"jobs:type:{type_}", f"jobs:st:{status}:{type_}"}


PATH_TO = {
    "pending": [],
    "running": ["running"],
    "completed": ["running", "completed"],
    "failed": ["running", "failed"],
    "cancelled": ["cancelled"],
}


def job_in(store: JobStore, status: str, type_: str = "backup") -> dict:
    job = store.create(type_, "docs")
    for step in PATH_TO[status]:
        job = store.transition(job.id, step)
    assert job.status == status
    return job


class FakeClock:
    """Stands in for the store's clock so timestamps can be told apart (they have whole-second precision)."""

    def __init__(self, start: datetime) -> None:
        self.micros = int(start.timestamp()) * 1_000_000

    def advance(self, seconds: int) -> None:
        self.micros += seconds * 1_000_000

    def __call__(self) -> int:
        return self.micros


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))
    monkeypatch.setattr(timeutil, "now_micros", fake)
    monkeypatch.setattr(timeutil, "_last_micros", 0)
    return fake


# --- create / get -------------------------------------------------------------------------------------


def test_create_returns_the_contract_job_and_get_reads_it_back(store: JobStore, clock: FakeClock) -> None:
    job = store.create("shard_backup", "docs", shard_id=3, snapshot_name="s.snapshot",
                       metadata={"storage_id": "st_1", "nested": {"a": [1, 2]}})
    assert list(job.to_dict()) == list(PUBLIC_FIELDS)
    assert job.to_dict() == {
        "id": job.id,
        "type": "shard_backup",
        "status": "pending",
        "collection_name": "docs",
        "shard_id": 3,
        "snapshot_name": "s.snapshot",
        "progress": 0,
        "error": None,
        "metadata": {"storage_id": "st_1", "nested": {"a": [1, 2]}},
        "created_at": "2031-05-06T07:08:09Z",
        "started_at": None,
        "completed_at": None,
    }
    assert store.get(job.id) == job
    assert store.exists(job.id)
    assert len(job.id) == 26 and job.id == job.id.lower()


def test_shard_id_zero_and_empty_metadata_survive(store: JobStore) -> None:
    job = store.create("shard_restore", "docs", shard_id=0)
    assert store.get(job.id).shard_id == 0
    assert store.get(job.id).metadata == {}


def test_unknown_job_is_not_found(store: JobStore, redis_client: redis.Redis, key_prefix: str) -> None:
    with pytest.raises(JobNotFound, match="nope"):
        store.get("nope")
    assert not store.exists("nope")
    for call in (
        lambda: store.transition("nope", "running"),
        lambda: store.set_progress("nope", 5),
        lambda: store.update("nope", error="x"),
        lambda: store.merge_metadata("nope", {"a": 1}),
        lambda: store.record_step("nope", "s", {}),
        lambda: store.get_with_steps("nope").steps,
        lambda: store.clear_steps("nope"),
    ):
        with pytest.raises(JobNotFound):
            call()
    assert not store.delete("nope")
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "snapshot", "collection_name": "docs"},
        {"type": "backup", "collection_name": ""},
        {"type": "backup", "collection_name": "docs", "shard_id": "1"},
        {"type": "backup", "collection_name": "docs", "shard_id": True},
        {"type": "backup", "collection_name": "docs", "metadata": ["a"]},
        {"type": "backup", "collection_name": "docs", "metadata": {"when": datetime.now()}},
    ],
)
def test_create_refuses_bad_input_and_stores_nothing(
    store: JobStore, redis_client: redis.Redis, key_prefix: str, kwargs: dict
) -> None:
    with pytest.raises(ValueError):
        store.create(**kwargs)
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []


# --- transitions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JOB_STATUSES, JOB_STATUSES)))
def test_every_transition_is_allowed_or_refused_per_the_table(
    store: JobStore, redis_client: redis.Redis, key_prefix: str, current: str, target: str
) -> None:
    job = job_in(store, current, "restore")
    before = stored_state(redis_client, key_prefix, job.id)
    if target in ALLOWED[current]:
        moved = store.transition(job.id, target)
        assert moved.status == target
        assert store.get(job.id) == moved
        assert indexes_holding(redis_client, key_prefix, job.id) == expected_indexes(target, "restore")
        # the score (creation time) moves with the job, so its place in every listing is unchanged
        _, memberships = stored_state(redis_client, key_prefix, job.id)
        assert {s for s in memberships.values() if s is not None} == {before[1][f"{key_prefix}jobs:all"]}
    else:
        with pytest.raises(TransitionError) as caught:
            store.transition(job.id, target)
        err = caught.value
        assert (err.job_id, err.current, err.target) == (job.id, current, target)
        assert f"cannot change job {job.id} from {current} to {target}" in str(err)
        assert stored_state(redis_client, key_prefix, job.id) == before


def test_refusal_messages_say_what_is_possible(store: JobStore) -> None:
    done = job_in(store, "completed")
    with pytest.raises(TransitionError, match="a completed job cannot change status"):
        store.transition(done.id, "cancelled")
    pending = job_in(store, "pending")
    with pytest.raises(TransitionError, match="a pending job can only become running or cancelled"):
        store.transition(pending.id, "completed")


def test_unknown_target_status_is_a_value_error(store: JobStore) -> None:
    job = store.create("backup", "docs")
    with pytest.raises(ValueError, match="unknown job status"):
        store.transition(job.id, "paused")
    assert store.get(job.id).status == "pending"


def test_timestamps_error_and_progress_through_a_failure_and_a_retry(
    store: JobStore, clock: FakeClock
) -> None:
    job = store.create("backup", "docs")
    created = job.created_at

    clock.advance(10)
    job = store.transition(job.id, "running")
    assert job.started_at == "2031-05-06T07:08:19Z"
    assert job.completed_at is None
    store.set_progress(job.id, 40)

    clock.advance(10)
    job = store.transition(job.id, "failed", error="Qdrant answered 500: disk full")
    assert job.status == "failed"
    assert job.error == "Qdrant answered 500: disk full"
    assert job.completed_at == "2031-05-06T07:08:29Z"
    assert job.progress == 40

    clock.advance(10)
    job = store.transition(job.id, "pending")  # retry
    assert job.error is None
    assert job.completed_at is None
    assert job.progress == 0
    assert job.started_at == "2031-05-06T07:08:19Z"  # kept: set only the first time the job runs
    assert job.created_at == created

    clock.advance(10)
    job = store.transition(job.id, "running")
    assert job.started_at == "2031-05-06T07:08:19Z"
    clock.advance(10)
    job = store.transition(job.id, "completed")
    assert job.completed_at == "2031-05-06T07:08:59Z"
    assert job.error is None


def test_cancelling_a_pending_job_sets_completed_at_but_not_started_at(
    store: JobStore, clock: FakeClock
) -> None:
    job = store.create("backup", "docs")
    clock.advance(5)
    job = store.transition(job.id, "cancelled")
    assert job.started_at is None
    assert job.completed_at == "2031-05-06T07:08:14Z"


def test_twenty_threads_racing_to_start_one_job_exactly_one_wins(
    store: JobStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    job = store.create("backup", "docs")
    outcomes = run_racing(20, lambda _: store.transition(job.id, "running"))
    winners = [o for o in outcomes if isinstance(o, Job)]
    losers = [o for o in outcomes if isinstance(o, TransitionError)]
    assert len(winners) == 1 and len(losers) == 19
    assert all(e.current == "running" for e in losers)
    assert store.get(job.id).status == "running"
    assert indexes_holding(redis_client, key_prefix, job.id) == expected_indexes("running", "backup")


def test_cancel_racing_completion_leaves_one_consistent_outcome(
    store: JobStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    for _ in range(20):
        job = job_in(store, "running")
        outcomes = run_racing(
            10, lambda i, j=job: store.transition(j.id, "cancelled" if i % 2 else "completed")
        )
        winners = [o for o in outcomes if isinstance(o, Job)]
        assert len(winners) == 1
        final = store.get(job.id)
        assert final.status == winners[0].status
        held = indexes_holding(redis_client, key_prefix, job.id)
        assert held == expected_indexes(final.status, "backup")


def run_racing(n: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` in n threads released together; return each result or exception."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except Exception as exc:  # collected and asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results


# --- progress, plain updates, metadata ----------------------------------------------------------------


def test_progress_is_clamped_and_never_goes_back_while_running(store: JobStore) -> None:
    job = store.create("backup", "docs")
    store.set_progress(job.id, 150)
    assert store.get(job.id).progress == 100
    store.set_progress(job.id, -3)
    assert store.get(job.id).progress == 0  # not running yet: any value is taken
    store.transition(job.id, "running")
    store.set_progress(job.id, 60)
    store.set_progress(job.id, 30)  # a late report
    assert store.get(job.id).progress == 60
    store.set_progress(job.id, 61)
    assert store.get(job.id).progress == 61


def test_bytes_moved_are_shown_in_metadata_and_cleared_by_a_retry(store: JobStore) -> None:
    job = store.create("backup", "docs", metadata={"note": "x"})
    store.transition(job.id, "running")
    assert "bytes_done" not in store.get(job.id).to_dict()["metadata"]
    store.set_progress(job.id, 40, moved=4096, total=10240)
    assert store.get(job.id).to_dict()["metadata"] == {"note": "x", "bytes_done": 4096, "bytes_total": 10240}
    store.set_progress(job.id, 10, moved=1024, total=10240)  # a late report moves neither
    assert store.get(job.id).to_dict()["metadata"]["bytes_done"] == 4096
    store.set_progress(job.id, 40, moved=5000)  # total unknown
    assert store.get(job.id).to_dict()["metadata"]["bytes_total"] is None
    store.transition(job.id, "failed", error="boom")
    store.set_progress(job.id, 90, moved=9000, total=10240)  # ended: nothing moves
    assert store.get(job.id).to_dict()["metadata"]["bytes_done"] == 5000
    store.transition(job.id, "pending")
    assert "bytes_done" not in store.get(job.id).to_dict()["metadata"]
    assert store.get(job.id).metadata == {"note": "x"}  # never part of the stored metadata


def test_update_sets_and_clears_plain_fields(store: JobStore) -> None:
    job = store.create("restore", "docs")
    job = store.update(job.id, snapshot_name="docs-1.snapshot")
    assert job.snapshot_name == "docs-1.snapshot"
    job = store.update(job.id, error="warning: slow")
    assert (job.snapshot_name, job.error) == ("docs-1.snapshot", "warning: slow")
    job = store.update(job.id, snapshot_name=None)
    assert (job.snapshot_name, job.error) == (None, "warning: slow")
    assert store.get(job.id) == job


def test_concurrent_metadata_merges_all_survive(store: JobStore) -> None:
    job = store.create("backup", "docs", metadata={"storage_id": "st_a"})
    outcomes = run_racing(20, lambda i: store.merge_metadata(job.id, {f"k{i}": i}))
    assert all(isinstance(o, Job) for o in outcomes)
    expected = {"storage_id": "st_a", **{f"k{i}": i for i in range(20)}}
    assert store.get(job.id).to_dict()["metadata"] == expected


def test_writes_to_a_deleted_job_do_not_bring_it_back(
    store: JobStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    job = store.create("backup", "docs")
    assert store.delete(job.id)
    for call in (
        lambda: store.set_progress(job.id, 5),
        lambda: store.update(job.id, error="late"),
        lambda: store.record_step(job.id, "upload", {"ok": True}),
        lambda: store.merge_metadata(job.id, {"a": 1}),
        lambda: store.transition(job.id, "running"),
    ):
        with pytest.raises(JobNotFound):
            call()
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []


# --- steps --------------------------------------------------------------------------------------------


def test_steps_are_recorded_privately(store: JobStore) -> None:
    job = store.create("backup", "docs")
    store.record_step(job.id, "snapshot", {"name": "docs-1.snapshot", "size": 123})
    store.record_step(job.id, "status", {"looks": "like a public field"})
    assert store.get_with_steps(job.id).steps == {
        "snapshot": {"name": "docs-1.snapshot", "size": 123},
        "status": {"looks": "like a public field"},
    }
    public = store.get(job.id)
    assert public.steps == {} and public.status == "pending"
    items, _ = store.list()
    assert list(items[0].to_dict()) == list(PUBLIC_FIELDS) and items[0].steps == {}
    assert store.get_with_steps(job.id).steps == store.get_with_steps(job.id).steps

    store.record_step(job.id, "snapshot", {"name": "docs-2.snapshot"})
    assert store.get_with_steps(job.id).steps["snapshot"] == {"name": "docs-2.snapshot"}
    store.clear_steps(job.id)
    assert store.get_with_steps(job.id).steps == {}
    assert store.get(job.id) == public


# --- counting and deleting ----------------------------------------------------------------------------


def test_count_active_using_storage(store: JobStore) -> None:
    def make(status: str, storage_id: str | None) -> None:
        job = store.create("backup", "docs", metadata={"storage_id": storage_id} if storage_id else None)
        for step in PATH_TO[status]:
            store.transition(job.id, step)

    for status in JOB_STATUSES:
        make(status, "st_a")
    make("pending", "st_b")
    make("running", None)
    assert store.count_active_using_storage("st_a") == 2
    assert store.count_active_using_storage("st_b") == 1
    assert store.count_active_using_storage("st_c") == 0


def test_delete_removes_the_job_everywhere(
    store: JobStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    keep = job_in(store, "failed", "shard_backup")
    gone = job_in(store, "failed", "shard_backup")
    store.record_step(gone.id, "x", {})
    assert store.delete(gone.id)
    with pytest.raises(JobNotFound):
        store.get(gone.id)
    assert indexes_holding(redis_client, key_prefix, gone.id) == set()
    assert store.list(status="failed", type="shard_backup") == ([store.get(keep.id)], 1)
    assert store.list()[1] == 1


# --- listing ------------------------------------------------------------------------------------------


def test_list_validates_its_arguments(store: JobStore) -> None:
    for kwargs in ({"status": "done"}, {"type": "snap"}, {"page": 0}, {"limit": 0}):
        with pytest.raises(ValueError):
            store.list(**kwargs)


def test_jobs_created_in_the_same_microsecond_list_in_id_order_on_every_page(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if 30 processes created jobs at the same instant: equal scores, order decided by the id.
    monkeypatch.setattr(timeutil, "next_micros", lambda: 1_900_000_000_000_000)
    ids = [store.create("backup", "docs").id for _ in range(30)]
    assert len(set(ids)) == 30
    full, total = store.list(limit=100)
    assert total == 30
    assert [j.id for j in full] == sorted(ids, reverse=True)
    paged = [j.id for page in range(1, 6) for j in store.list(page=page, limit=7)[0]]
    assert paged == sorted(ids, reverse=True)


def walk(store: JobStore, status: str | None, type_: str | None, limit: int) -> tuple[list[str], set[int]]:
    ids: list[str] = []
    totals: set[int] = set()
    page = 1
    while True:
        items, total = store.list(status=status, type=type_, page=page, limit=limit)
        totals.add(total)
        if not items:
            return ids, totals
        assert len(items) <= limit
        ids += [j.id for j in items]
        page += 1


ALL_FILTERS = [(None, None)] + [(s, None) for s in JOB_STATUSES] + [(None, t) for t in JOB_TYPES]
ALL_FILTERS += list(itertools.product(JOB_STATUSES, JOB_TYPES))


def check_listing(
    store: JobStore,
    created: list[str],
    status_of: dict[str, str],
    type_of: dict[str, str],
    filters: list[tuple[str | None, str | None]],
) -> None:
    newest_first = list(reversed(created))
    for status, type_ in filters:
        expected = [
            i for i in newest_first
            if (status is None or status_of[i] == status) and (type_ is None or type_of[i] == type_)
        ]
        ids, totals = walk(store, status, type_, 100)
        assert ids == expected, (status, type_)
        assert totals == {len(expected)}, (status, type_)


RESHUFFLE = {"pending": "cancelled", "running": "completed", "failed": "pending", "cancelled": "pending"}


def test_listing_ten_thousand_jobs(store: JobStore) -> None:
    created: list[str] = []
    status_of: dict[str, str] = {}
    type_of: dict[str, str] = {}
    for i in range(10_000):
        # 500 jobs of every status and type combination, interleaved in time
        type_ = JOB_TYPES[(i // 5) % 4]
        job = store.create(type_, f"c{i % 7}")
        status = JOB_STATUSES[i % 5]
        for step in PATH_TO[status]:
            store.transition(job.id, step)
        created.append(job.id)
        status_of[job.id] = status
        type_of[job.id] = type_

    # creation order, id order and listing order are one and the same
    assert created == sorted(created)
    check_listing(store, created, status_of, type_of, ALL_FILTERS)

    # listed jobs carry the filtered status and type
    items, total = store.list(status="running", type="restore", page=3, limit=50)
    assert all(j.status == "running" and j.type == "restore" for j in items)

    # the last, partial page and a page beyond the end
    failed_backups = [i for i in reversed(created) if status_of[i] == "failed" and type_of[i] == "backup"]
    assert len(failed_backups) == 500
    last_page, total = store.list(status="failed", type="backup", page=72, limit=7)
    assert total == 500
    assert [j.id for j in last_page] == failed_backups[497:]
    assert store.list(status="failed", type="backup", page=73, limit=7) == ([], 500)
    assert store.list(page=10_000, limit=100) == ([], 10_000)
    everything, total = store.list(page=1, limit=10_000)
    assert total == 10_000 and [j.id for j in everything] == list(reversed(created))

    # moving jobs between statuses moves them between listings, keeping their place in time
    for job_id in created[::10]:
        current = status_of[job_id]
        target = RESHUFFLE.get(current)
        if target:
            store.transition(job_id, target)
            status_of[job_id] = target
    # (the all-jobs and per-type listings cannot change with status; walking them again only costs time)
    check_listing(store, created, status_of, type_of, [f for f in ALL_FILTERS if f[0] is not None])
    assert store.list(limit=1)[1] == 10_000
    assert {t: store.list(type=t, limit=1)[1] for t in JOB_TYPES} == dict.fromkeys(JOB_TYPES, 2500)


# --- the storage check done by create itself (one round trip per job) ---


def test_create_fills_in_the_default_storage_and_keeps_the_rest_of_the_metadata(store, redis_client, key_prefix):
    ref = StorageRef(config_prefix=f"{key_prefix}storage:", default_key=f"{key_prefix}storages:default")
    redis_client.set(ref.default_key, "st_default1")
    redis_client.hset(f"{key_prefix}storage:st_default1", "id", "st_default1")
    meta = {"note": 'quote " and nul \x00 and ü', "keep_on_qdrant": True}
    job = store.create("backup", "c", metadata=meta, storage=ref)
    expected = {"storage_id": "st_default1", **meta}
    assert job.storage_id == "st_default1" and job.to_dict()["metadata"] == expected
    stored = store.get(job.id)  # what was stored, not just what was returned
    assert stored.storage_id == "st_default1" and stored.metadata == meta
    assert redis_client.hget(f"{key_prefix}job:{job.id}", "storage_id") == b"st_default1"


def test_create_checks_a_named_storage_exists(store, redis_client, key_prefix):
    ref = StorageRef(config_prefix=f"{key_prefix}storage:", default_key=f"{key_prefix}storages:default")
    redis_client.hset(f"{key_prefix}storage:st_named1", "id", "st_named1")
    job = store.create("restore", "c", snapshot_name="b1", metadata={"storage_id": "st_named1"}, storage=ref)
    assert store.get(job.id).storage_id == "st_named1" and store.get(job.id).metadata == {}
    with pytest.raises(StorageMissing) as missing:
        store.create("backup", "c", metadata={"storage_id": "st_gone"}, storage=ref)
    assert missing.value.storage_id == "st_gone"
    assert store.list()[1] == 1  # the refused job left nothing behind, in no index


def test_create_without_any_default_storage_stores_nothing(store, redis_client, key_prefix):
    ref = StorageRef(config_prefix=f"{key_prefix}storage:", default_key=f"{key_prefix}storages:default")
    with pytest.raises(StorageMissing) as missing:
        store.create("backup", "c", storage=ref)
    assert missing.value.storage_id is None
    assert store.list()[1] == 0
    assert not any(redis_client.exists(key) for key in all_index_keys(key_prefix))


def test_a_job_stored_by_an_older_qbm_keeps_its_storage_backend(store, redis_client, key_prefix):
    """Before storage_id had a field of its own, it lived in the metadata JSON: such jobs still read (and are
    still counted as using their backend) after an upgrade."""
    job = store.create("backup", "docs", metadata={"storage_id": "st_old", "keep_on_qdrant": True})
    key = f"{key_prefix}job:{job.id}"
    redis_client.hdel(key, "storage_id")
    redis_client.hset(key, "metadata", '{"storage_id":"st_old","keep_on_qdrant":true}')
    old = store.get(job.id)
    assert old.storage_id == "st_old" and old.metadata == {"keep_on_qdrant": True}
    assert old.to_dict()["metadata"] == {"storage_id": "st_old", "keep_on_qdrant": True}
    assert store.count_active_using_storage("st_old") == 1


def test_update_sets_and_clears_several_fields_in_one_write(store: JobStore) -> None:
    job = store.create("backup", "docs")

    updated = store.update(job.id, snapshot_name="20261120T000000Z-00000001", error="the bucket is gone")

    expected = ("20261120T000000Z-00000001", "the bucket is gone")
    assert (updated.snapshot_name, updated.error) == expected
    assert (store.get(job.id).snapshot_name, store.get(job.id).error) == expected
    mixed = store.update(job.id, snapshot_name="20261120T000000Z-00000002", error=None)  # one set, one cleared
    assert (mixed.snapshot_name, store.get(job.id).error) == ("20261120T000000Z-00000002", None)
    store.update(job.id, error="again")
    cleared = store.update(job.id, snapshot_name=None, error=None)
    assert (cleared.snapshot_name, cleared.error) == (None, None)
    assert (store.get(job.id).snapshot_name, store.get(job.id).error) == (None, None)
