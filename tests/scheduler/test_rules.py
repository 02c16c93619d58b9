"""The scheduler's timing rules with injected times: DST fall-back, missed runs at start, one fire per tick,
crontab meaning. No test here waits for the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.runtime.timeutil import to_iso
from shared.schedules.store import handled_until
from shared.schedules.timing import plan_catch_up, wall_clock_slot
from shared.schedules.triggers import InvalidSchedule, build_trigger, parse_crontab, ticks_between

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- DST ----------------------------------------------------------------------------------------------


def test_apscheduler_fires_twice_at_0230_on_the_fall_back_night():
    """The problem the slot rule exists for, pinned so an APScheduler upgrade that fixes it
    shows up here."""
    ticks = ticks_between(parse_crontab("30 2 * * *", BERLIN), utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]
    assert {wall_clock_slot(t, BERLIN) for t in ticks[:2]} == {"2026-10-25T02:30:00"}


def test_the_fire_path_runs_the_repeated_slot_once(firing, schedules, job_store, handed_over):
    """Every tick APScheduler would hand over that night goes through the real fire path (claims in Redis)."""
    schedule = schedules.create({"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
                                 "collections": ["docs"]})
    ticks = ticks_between(build_trigger(schedule), utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    results = [firing.fire_tick(schedule["id"], tick, now=tick + timedelta(seconds=1)) for tick in ticks]
    assert [r is not None for r in results] == [True, False, True]
    jobs, total = job_store.list()
    assert total == 2 and len(handed_over) == 2
    assert sorted(j.metadata["scheduled_for"] for j in jobs) == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]


def test_interval_schedules_count_seconds_not_wall_clock(firing, schedules, job_store):
    """An hourly interval across the fall-back hour runs every hour, including both 02:30s."""
    schedule = schedules.create({"name": "hourly", "interval_seconds": 3600, "timezone": "Europe/Berlin",
                                 "collections": ["docs"]})
    start = utc(2026, 10, 24, 22, 30)
    for hour in range(5):
        tick = start + hour * HOUR
        assert firing.fire_tick(schedule["id"], tick, now=tick) is not None
    assert job_store.list()[1] == 5


# --- one fire per tick ----------------------------------------------------------------------------------


def test_a_tick_fires_once_however_often_it_is_handed_over(firing, schedules, job_store, handed_over):
    schedule = schedules.create({"name": "s", "interval_seconds": 10, "collections": ["a", "b"]})
    tick = utc(2026, 11, 24, 2, 15)
    first = firing.fire_tick(schedule["id"], tick, now=tick)
    assert first is not None and len(first["job_ids"]) == 2
    assert firing.fire_tick(schedule["id"], tick, now=tick) is None
    assert job_store.list()[1] == 2 and handed_over == first["job_ids"]
    stored = schedules.get(schedule["id"])
    assert stored["last_run"]["job_ids"] == first["job_ids"] and stored["last_tick_at"] == to_iso(tick)


def test_a_scheduler_that_lost_its_lease_does_not_fire(firing, schedules, job_store):
    schedule = schedules.create({"name": "s", "interval_seconds": 10, "collections": ["a"]})
    firing.may_fire = lambda: False
    assert firing.fire_tick(schedule["id"], utc(2026, 11, 24), now=utc(2026, 11, 24)) is None
    assert job_store.list()[1] == 0


def test_disabled_or_deleted_schedules_do_not_fire(firing, schedules, job_store):
    schedule = schedules.create({"name": "s", "interval_seconds": 10, "collections": ["a"]})
    schedules.update(schedule["id"], {"enabled": False})
    assert firing.fire_tick(schedule["id"], utc(2026, 11, 24), now=utc(2026, 11, 24)) is None
    schedules.delete(schedule["id"])
    assert firing.fire_tick(schedule["id"], utc(2026, 11, 25), now=utc(2026, 11, 25)) is None
    assert job_store.list()[1] == 0


def test_a_run_handed_over_after_the_grace_period_is_skipped_and_recorded(firing, schedules, job_store):
    schedule = schedules.create({"name": "s", "cron": "0 2 * * *", "collections": ["a"]})
    tick = utc(2026, 11, 24, 2)
    record = firing.fire_tick(schedule["id"], tick, now=tick + 2 * HOUR)
    assert record is not None and record["status"] == "skipped" and record["job_ids"] == []
    assert job_store.list()[1] == 0
    assert schedules.get(schedule["id"])["last_run"]["status"] == "skipped"


# --- missed runs at start -----------------------------------------------------------------------------


def test_missed_run_within_grace_fires_once_coalesced():
    nightly = parse_crontab("0 2 * * *", ZoneInfo("UTC"))
    last = utc(2026, 11, 20, 2)
    plan = plan_catch_up(nightly, last, now=utc(2026, 11, 23, 2, 40), grace=HOUR)
    assert plan.fire == utc(2026, 11, 23, 2)
    assert plan.skipped == 2  # the 21st and 22nd: too old
    assert plan.newest == utc(2026, 11, 23, 2)


def test_missed_runs_older_than_grace_are_skipped():
    nightly = parse_crontab("0 2 * * *", ZoneInfo("UTC"))
    plan = plan_catch_up(nightly, utc(2026, 11, 20, 2), now=utc(2026, 11, 23, 4), grace=HOUR)
    assert plan.fire is None and plan.skipped == 3 and plan.newest == utc(2026, 11, 23, 2)


def test_many_missed_runs_within_grace_become_one():
    every_10s = build_trigger({"interval_seconds": 10, "timezone": "UTC", "baseline_at": "2026-11-24T00:00:00Z"})
    plan = plan_catch_up(every_10s, utc(2026, 11, 24, 0, 0, 10), now=utc(2026, 11, 24, 0, 0, 45), grace=HOUR)
    assert plan.fire == utc(2026, 11, 24, 0, 0, 40) and plan.skipped == 2  # 20 s and 30 s merged into it


def test_nothing_missed():
    nightly = parse_crontab("0 2 * * *", ZoneInfo("UTC"))
    assert plan_catch_up(nightly, utc(2026, 11, 23, 2), now=utc(2026, 11, 23, 23), grace=HOUR).fire is None
    assert plan_catch_up(nightly, utc(2026, 11, 23, 2), now=utc(2026, 11, 23, 1), grace=HOUR).skipped == 0


def test_catch_up_at_start_through_the_fire_path(firing, schedules, job_store):
    schedule = schedules.create({"name": "s", "cron": "0 2 * * *", "collections": ["a"]})
    # As if the schedule had existed for a week and last ran on the 20th; the scheduler starts at 02:20.
    schedules.record_run(schedule["id"], {"at": "2026-11-20T02:00:00Z", "job_ids": [], "status": "submitted",
                                          "error": None, "skipped": 0, "manual": False}, tick=utc(2026, 11, 20, 2))
    stored = {**schedules.get(schedule["id"]), "baseline_at": "2026-11-15T00:00:00Z"}
    assert handled_until(stored) == utc(2026, 11, 20, 2)
    record = firing.catch_up(stored, now=utc(2026, 11, 23, 2, 20))
    assert record is not None and record["at"] == "2026-11-23T02:00:00Z" and record["skipped"] == 2
    assert len(record["job_ids"]) == 1 and job_store.list()[1] == 1
    # A second scheduler starting a moment later finds nothing left to do.
    again = {**schedules.get(schedule["id"]), "baseline_at": "2026-11-15T00:00:00Z"}
    assert firing.catch_up(again, now=utc(2026, 11, 23, 2, 21)) is None
    assert job_store.list()[1] == 1


def test_catch_up_records_skipped_runs(firing, schedules, job_store):
    schedule = schedules.create({"name": "s", "cron": "0 2 * * *", "collections": ["a"]})
    stored = {**schedule, "baseline_at": "2026-11-20T03:00:00Z"}
    record = firing.catch_up(stored, now=utc(2026, 11, 23, 9))
    assert record is not None and record["status"] == "skipped" and record["skipped"] == 3
    assert schedules.get(schedule["id"])["last_run"]["skipped"] == 3
    assert schedules.get(schedule["id"])["last_tick_at"] == "2026-11-23T02:00:00Z"
    assert job_store.list()[1] == 0


# --- crontab meaning ----------------------------------------------------------------------------------


def _weekdays(expr: str) -> set[int]:
    ticks = ticks_between(parse_crontab(expr, ZoneInfo("UTC")), utc(2026, 11, 22), utc(2026, 11, 29))
    return {t.weekday() for t in ticks}


@pytest.mark.parametrize(
    ("expr", "weekdays"),
    [("0 3 * * 0", {6}), ("0 3 * * 7", {6}), ("0 3 * * 1-5", {0, 1, 2, 3, 4}), ("0 3 * * sat,sun", {5, 6}),
     ("0 3 * * */2", {6, 1, 3, 5}), ("0 3 * * 5-7", {4, 5, 6}), ("0 3 * * *", set(range(7)))],
)
def test_weekdays_follow_crontab(expr, weekdays):
    assert _weekdays(expr) == weekdays


def test_day_of_month_or_weekday_as_in_cron():
    """cron(8): with both restricted, either matching is enough."""
    ticks = ticks_between(parse_crontab("0 3 1 * 1", ZoneInfo("UTC")), utc(2026, 11, 20), utc(2026, 12, 10))
    assert [t.day for t in ticks] == [23, 30, 1, 7]  # Mondays, and the 1st (a Tuesday)


@pytest.mark.parametrize("expr", ["0 3 * *", "0 3 * * * *", "60 * * * *", "0 24 * * *", "0 3 * * 8",
                                  "0 3 * * mon-", "0 3 0 * *", "0 3 * 13 *", "*/0 * * * *", "? 3 * * *"])
def test_bad_crontab_names_cron(expr):
    with pytest.raises(InvalidSchedule) as caught:
        parse_crontab(expr, ZoneInfo("UTC"))
    assert caught.value.field == "cron"
