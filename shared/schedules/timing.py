"""The two timing rules of the scheduler, as pure functions of injected times (so tests need no clock).

Wall-clock slots: a cron schedule names local times, and on the night clocks fall back a local time happens
twice; APScheduler 3.11 then fires twice (02:30 Europe/Berlin on 2026-10-25; pinned by
tests/scheduler/test_rules.py). A schedule runs at most once per local wall-clock slot, so each fire is keyed by
its slot as well as by its UTC instant.

Missed runs: runs that fell due while no scheduler was up. The newest one still within the grace period runs
once (coalesced: ten missed runs are one catch-up backup, not ten); older ones are skipped and counted, because
a backup taken hours late under the name of an old tick is worse than an honest "skipped".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from shared.schedules.triggers import ticks_between

#: How many missed ticks are counted one by one before the count is reported as "at least".
MAX_COUNTED = 100_000
_EPSILON = timedelta(microseconds=1)


def wall_clock_slot(tick: datetime, tz: ZoneInfo) -> str:
    """The local wall-clock time of ``tick`` without its offset: both 02:30 of a fall-back night give the
    same slot ``2026-10-25T02:30:00``."""
    return tick.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class CatchUp:
    """What to do at start about runs that fell due since ``last``."""

    #: The one missed run to fire now (the newest within the grace period), or None.
    fire: datetime | None
    #: Missed runs that will not run: older than the grace period, or merged into ``fire``.
    skipped: int
    #: The newest missed run (fired or skipped): the scheduler's new "handled up to" mark.
    newest: datetime | None


def plan_catch_up(trigger: BaseTrigger, last: datetime, now: datetime, grace: timedelta) -> CatchUp:
    """Missed runs of ``trigger`` after ``last`` (the last run handled) up to ``now``.

    A run is missed when it fell due in ``(last, now]``. The newest missed run fires if it is at most
    ``grace`` old; every other missed run is skipped.
    """
    if now <= last:
        return CatchUp(fire=None, skipped=0, newest=None)
    window_start = max(last, now - grace - _EPSILON)
    recent = ticks_between(trigger, window_start, now)
    old = ticks_between(trigger, last, window_start, limit=MAX_COUNTED) if window_start > last else []
    fire = recent[-1] if recent else None
    skipped = len(old) + max(0, len(recent) - 1)
    newest = fire or (old[-1] if old else None)
    return CatchUp(fire=fire, skipped=skipped, newest=newest)


def is_too_late(tick: datetime, now: datetime, grace: timedelta) -> bool:
    """A run that APScheduler hands over later than ``grace`` after its time (a stalled process) is skipped
    like a run missed while down, instead of firing at a surprising hour."""
    return now - tick > grace
