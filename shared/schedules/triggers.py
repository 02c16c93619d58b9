"""From a schedule's cron expression or interval to an APScheduler trigger, with standard crontab meaning.

APScheduler 3.x reads crontab expressions with two differences from cron(8) that would surprise anyone who
copies a line from a crontab: its weekday 0 is Monday (cron: Sunday; APScheduler's own docstring calls it a
historical mistake), and when both day-of-month and day-of-week are restricted it requires both to match
(cron: either). :func:`parse_crontab` gives cron's meaning: weekdays are translated to names, and the
either-or case becomes an ``OrTrigger`` of two cron triggers.

Interval schedules are anchored at the schedule's ``baseline_at`` (when its timing last changed), never at
"now": every scheduler process then computes the same ticks, which is what lets the per-tick dedupe key
work across processes and leader changes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from shared.runtime.timeutil import parse_iso

MIN_INTERVAL_SECONDS = 10
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: 0 (and 7) = Sunday
_DAY_NUMBERS = {name: number for number, name in enumerate(_CRON_DAYS)}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_EPSILON = timedelta(microseconds=1)
_ATOM_RE = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


class InvalidSchedule(ValueError):
    """A timing field is unusable; ``field`` names it (cron, timezone, interval_seconds)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_timezone(name: object) -> ZoneInfo:
    """The IANA zone called ``name``; raises InvalidSchedule naming ``timezone``."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise InvalidSchedule("timezone", f"unknown time zone {name!r}; use an IANA name like Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule("timezone", f"unknown time zone {name!r}; use an IANA name like Europe/Berlin"
                              ) from None


def _weekday_number(text: str) -> int:
    if text in _DAY_NUMBERS:
        return _DAY_NUMBERS[text]
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"{text!r} is not a weekday (0-7 or sun-sat)")


def _weekdays(field: str) -> str:
    """Cron's day-of-week field as APScheduler weekday names (``1-5`` -> ``mon,tue,wed,thu,fri``)."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        match = _ATOM_RE.match(part)
        if not match:
            raise ValueError(f"{part!r} is not a weekday list item")
        base, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError("a step must be at least 1")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-")
            low, high = _weekday_number(first), _weekday_number(last)
        else:
            low = _weekday_number(base)
            high = 6 if step_text else low
        if low > high:
            raise ValueError(f"{part!r}: a range must go from low to high")
        days.update(day % 7 for day in range(low, high + 1, step))
    order = [1, 2, 3, 4, 5, 6, 0]  # APScheduler lists weekdays from Monday
    return ",".join(_CRON_DAYS[d] for d in order if d in days)


def parse_crontab(expr: object, tz: ZoneInfo) -> BaseTrigger:
    """A trigger that fires when cron(8) would for the 5-field ``expr`` in ``tz``.

    Raises InvalidSchedule naming ``cron`` with the reason (wrong field count, a value out of range...).
    """
    if not isinstance(expr, str):
        raise InvalidSchedule("cron", "must be a string of 5 fields: minute hour day-of-month month day-of-week")
    fields = expr.lower().split()
    if len(fields) != 5:
        raise InvalidSchedule(
            "cron", f"{expr!r} has {len(fields)} field(s); expected 5: minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, dow = fields
    for name, value in zip(_FIELD_NAMES, fields, strict=True):
        if value == "?" and name not in ("day of month", "day of week"):
            raise InvalidSchedule("cron", f"{expr!r}: '?' is only allowed for the day fields")
    day = "*" if day == "?" else day
    try:
        weekdays = _weekdays(dow)
        common: dict[str, Any] = {"minute": minute, "hour": hour, "month": month, "timezone": tz}
        if day != "*" and weekdays != "*":
            # cron(8): either the day of month or the weekday matches.
            return OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=weekdays, **common)])
        return CronTrigger(day=day, day_of_week=weekdays, **common)
    except ValueError as exc:
        raise InvalidSchedule("cron", f"{expr!r} is not a valid crontab expression: {exc}") from None


def check_interval(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_INTERVAL_SECONDS:
        raise InvalidSchedule("interval_seconds", f"must be an integer of at least {MIN_INTERVAL_SECONDS}")
    return value


def build_trigger(schedule: dict[str, Any]) -> BaseTrigger:
    """The trigger for a stored schedule (``cron`` or ``interval_seconds``, ``timezone``, ``baseline_at``)."""
    tz = check_timezone(schedule.get("timezone") or "UTC")
    if schedule.get("cron"):
        return parse_crontab(schedule["cron"], tz)
    seconds = check_interval(schedule.get("interval_seconds"))
    anchor = parse_iso(schedule.get("baseline_at") or schedule["created_at"])
    return IntervalTrigger(seconds=seconds, start_date=anchor, timezone=tz)


def is_wall_clock(schedule: dict[str, Any]) -> bool:
    """Cron schedules name local wall-clock times (so DST can repeat them); interval ones count seconds."""
    return bool(schedule.get("cron"))


def ticks_between(trigger: BaseTrigger, after: datetime, until: datetime, limit: int = 100_000
                  ) -> list[datetime]:
    """The trigger's fire times ``t`` with ``after < t <= until`` (UTC, in order), at most ``limit``.

    Each step asks for the first fire time at or after the previous one plus a microsecond, the same
    question APScheduler asks while it runs, so this lists exactly the runs APScheduler would make --
    including both 02:30 runs of a fall-back night.
    """
    out: list[datetime] = []
    cursor = after + _EPSILON
    while len(out) < limit:
        nxt = trigger.get_next_fire_time(None, cursor)
        if nxt is None:
            break
        nxt = nxt.astimezone(UTC)
        if nxt > until:
            break
        out.append(nxt)
        cursor = max(cursor, nxt) + _EPSILON
    return out


def next_fire_time(schedule: dict[str, Any], now: datetime) -> datetime | None:
    """When the schedule fires next (UTC), None while disabled."""
    if not schedule.get("enabled", True):
        return None
    nxt = build_trigger(schedule).get_next_fire_time(None, now)
    return nxt.astimezone(UTC) if nxt else None
