"""Schedules, kept in Redis hashes owned by QBM (not in APScheduler's job store).

APScheduler's own Redis job store cannot be shared by several schedulers (every tick fires once per process,
measured with APScheduler 3.11), and it pickles functions. So the schedules live here, and the leader keeps an in-memory
APScheduler in step with them by watching one counter.

Layout: ``{prefix}schedule:{id}`` hash (absent field = ``None``; lists and objects as JSON), the sorted set
``{prefix}schedules:all`` of ids by creation time, and ``{prefix}schedules:version``, incremented by every
create, update and delete -- one cheap GET tells a scheduler whether anything changed. Fire records
(``last_run``, the last tick handled) are written without touching the version: they are results, not
definitions.

Per-tick claims ``{prefix}schedtick:{id}:{utc instant}`` and ``{prefix}schedslot:{id}:{local slot}`` are
set with SET NX semantics (both or neither, in one script) and a TTL, so a tick is fired by one process
only, and a cron schedule at most once per local wall-clock slot.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline

from shared.intake.names import InvalidName, check_collection_name
from shared.runtime.metrics_keys import scheduler_last_fire
from shared.runtime.timeutil import next_micros, parse_iso, text, to_iso
from shared.schedules.triggers import InvalidSchedule, check_interval, check_timezone, next_fire_time, parse_crontab

SCHEDULE_TYPES = ("backup", "shard_backup")
ALL_COLLECTIONS = "*"
#: Fields of the public Schedule object that are stored as given.
DEFINITION_FIELDS = ("name", "cron", "interval_seconds", "timezone", "collections", "type", "storage_id",
                     "retention", "enabled")
#: Changing one of these changes when the schedule fires.
TIMING_FIELDS = ("cron", "interval_seconds", "timezone", "enabled")
_JSON_FIELDS = ("collections", "retention", "last_run")
_SCORE_FIELD = "_created_us"
_BASELINE_FIELD = "_baseline_at"
_LAST_TICK_FIELD = "_last_tick_us"

# KEYS: claim keys. ARGV: ttl ms, holder. All claimed, or none (returns 0 when any was taken).
_CLAIM_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return 0 end
end
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[2], 'PX', ARGV[1]) end
return 1
"""

# KEYS[1] hash. ARGV: last_run JSON, tick micros ('' = none). Never resurrects a deleted schedule; the tick
# mark only moves forward (a late, slow fire must not move it back).
_RECORD_LUA = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_run', ARGV[1])
if ARGV[2] ~= '' then
  local current = redis.call('HGET', KEYS[1], '{_LAST_TICK_FIELD}')
  if not current or tonumber(current) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], '{_LAST_TICK_FIELD}', ARGV[2])
  end
end
return 1
"""


class ScheduleNotFound(LookupError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id} not found")
        self.schedule_id = schedule_id






def _micros(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _from_micros(value: str | None) -> str | None:
    return to_iso(datetime.fromtimestamp(int(value) / 1_000_000, UTC)) if value else None


# --- validation ----------------------------------------------------------------------------------------


def _check_collections(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidSchedule("collections", 'must be a non-empty list of collection names, or ["*"]')
    if ALL_COLLECTIONS in value:
        if value != [ALL_COLLECTIONS]:
            raise InvalidSchedule("collections", '"*" (every collection) cannot be combined with names')
        return value
    for name in value:
        try:
            check_collection_name(name)
        except InvalidName as exc:
            raise InvalidSchedule("collections", f"{name!r} {exc}") from None
    if len(set(value)) != len(value):
        raise InvalidSchedule("collections", "names must not repeat")
    return list(value)


def _check_retention(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidSchedule("retention", "must be an object with keep_last and/or max_age_days")
    unknown = sorted(set(value) - {"keep_last", "max_age_days"})
    if unknown:
        raise InvalidSchedule(f"retention.{unknown[0]}", "unknown field; use keep_last and/or max_age_days")
    keep_last, max_age = value.get("keep_last"), value.get("max_age_days")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise InvalidSchedule("retention.keep_last", "must be an integer of at least 1")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0):
        raise InvalidSchedule("retention.max_age_days", "must be a number greater than 0")
    if keep_last is None and max_age is None:
        return None
    return {"keep_last": keep_last, "max_age_days": max_age}


def validate_schedule(data: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Check a complete schedule definition and return it normalised; raises InvalidSchedule naming the
    field. The API and the store both call this, so no invalid schedule is ever stored."""
    out = {name: data.get(name) for name in DEFINITION_FIELDS}
    name = out["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidSchedule("name", "must be 1-200 characters")
    out["timezone"] = out["timezone"] or "UTC"
    tz = check_timezone(out["timezone"])
    cron, interval = out["cron"], out["interval_seconds"]
    if (cron is None) == (interval is None):
        field = "cron" if cron is None else "interval_seconds"
        raise InvalidSchedule(field, "give exactly one of cron and interval_seconds")
    if cron is not None:
        trigger = parse_crontab(cron, tz)
        if trigger.get_next_fire_time(None, now or datetime.now(UTC)) is None:
            raise InvalidSchedule("cron", f"{cron!r} never fires")
        out["cron"] = " ".join(cron.split())
    else:
        check_interval(interval)
    out["collections"] = _check_collections(out["collections"])
    out["type"] = out["type"] or "backup"
    if out["type"] not in SCHEDULE_TYPES:
        raise InvalidSchedule("type", f"must be one of {', '.join(SCHEDULE_TYPES)}")
    storage_id = out["storage_id"]
    if storage_id is not None and (not isinstance(storage_id, str) or not storage_id):
        raise InvalidSchedule("storage_id", "must be a storage backend id")
    out["retention"] = _check_retention(out["retention"])
    out["enabled"] = True if out["enabled"] is None else out["enabled"]
    if not isinstance(out["enabled"], bool):
        raise InvalidSchedule("enabled", "must be true or false")
    return out


# --- the store -----------------------------------------------------------------------------------------


class ScheduleStore:
    """CRUD for schedules plus the records the scheduler keeps per schedule (see the module docstring)."""

    def __init__(self, redis: Redis, prefix: str = "qbm:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._index_key = f"{prefix}schedules:all"
        self.version_key = f"{prefix}schedules:version"
        self._claim = redis.register_script(_CLAIM_LUA)
        self._record = redis.register_script(_RECORD_LUA)

    def _key(self, schedule_id: str) -> str:
        return f"{self._prefix}schedule:{schedule_id}"

    # --- conversions ---

    def _to_dict(self, raw: dict[Any, Any]) -> dict[str, Any] | None:
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields.get("id"):
            return None
        out: dict[str, Any] = {"id": fields["id"]}
        for name in DEFINITION_FIELDS:
            out[name] = fields.get(name)
        out["interval_seconds"] = int(out["interval_seconds"]) if out["interval_seconds"] else None
        out["enabled"] = fields.get("enabled") == "1"
        for name in _JSON_FIELDS:
            value = fields.get(name)
            out[name] = json.loads(value) if value else None
        out["created_at"] = fields.get("created_at")
        out["updated_at"] = fields.get("updated_at")
        out["baseline_at"] = fields.get(_BASELINE_FIELD) or out["created_at"]
        out["last_tick_at"] = _from_micros(fields.get(_LAST_TICK_FIELD))
        return out

    @staticmethod
    def _encode(data: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """Stored strings for the definition fields; ``None`` values are deleted instead."""
        set_fields: dict[str, str] = {}
        del_fields: list[str] = []
        for name in DEFINITION_FIELDS:
            if name not in data:
                continue
            value = data[name]
            if value is None:
                del_fields.append(name)
            elif name == "enabled":
                set_fields[name] = "1" if value else "0"
            elif name in _JSON_FIELDS:
                set_fields[name] = json.dumps(value, separators=(",", ":"))
            else:
                set_fields[name] = str(value)
        return set_fields, del_fields

    # --- CRUD ---

    def create(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validate and store a new schedule; returns it. Raises InvalidSchedule."""
        definition = validate_schedule(data)
        micros = next_micros()
        now = to_iso(datetime.fromtimestamp(micros // 1_000_000, UTC))
        schedule_id = f"sc_{secrets.token_hex(6)}"
        set_fields, _ = self._encode(definition)
        set_fields.update({"id": schedule_id, "created_at": now, "updated_at": now, _BASELINE_FIELD: now,
                           _SCORE_FIELD: str(micros)})
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._key(schedule_id), mapping=set_fields)
        pipe.zadd(self._index_key, {schedule_id: micros})
        pipe.incr(self.version_key)
        pipe.hgetall(self._key(schedule_id))
        return self._to_dict(pipe.execute()[-1]) or {}

    def get(self, schedule_id: str) -> dict[str, Any]:
        schedule = self._to_dict(self._redis.hgetall(self._key(schedule_id)))
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    def list(self) -> list[dict[str, Any]]:
        """Every schedule, oldest first."""
        ids = [text(i) for i in self._redis.zrange(self._index_key, 0, -1)]
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hgetall(self._key(schedule_id or ""))
        return [s for s in (self._to_dict(raw) for raw in pipe.execute()) if s is not None]

    def update(self, schedule_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial change (validated merged with the stored schedule) and return the schedule.

        When the timing changes (cron, interval, time zone, or the schedule is enabled again) the baseline
        moves to now: interval ticks are counted from there, and runs "missed" while the schedule had
        another timing or was off are not caught up.
        """
        key = self._key(schedule_id)

        def apply(pipe: Pipeline) -> None:
            current = self._to_dict(pipe.hgetall(key))
            if current is None:
                raise ScheduleNotFound(schedule_id)
            merged = validate_schedule({**current, **changes})
            now = to_iso(datetime.now(UTC))
            set_fields, del_fields = self._encode(merged)
            set_fields["updated_at"] = now
            timing_changed = any(merged[f] != current[f] for f in TIMING_FIELDS if f != "enabled")
            if timing_changed or (merged["enabled"] and not current["enabled"]):
                set_fields[_BASELINE_FIELD] = now
            pipe.multi()
            pipe.hset(key, mapping=set_fields)
            if del_fields:
                pipe.hdel(key, *del_fields)
            pipe.incr(self.version_key)

        self._redis.transaction(apply, key)
        return self.get(schedule_id)

    def delete(self, schedule_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key(schedule_id))
        pipe.zrem(self._index_key, schedule_id)
        pipe.incr(self.version_key)
        deleted, *_ = pipe.execute()
        if not deleted:
            raise ScheduleNotFound(schedule_id)

    def version(self) -> int:
        """Changes whenever a schedule is created, changed or deleted."""
        return int(self._redis.get(self.version_key) or 0)

    # --- scheduler records ---

    def record_run(self, schedule_id: str, record: dict[str, Any], *, tick: datetime | None = None) -> bool:
        """Store the schedule's ``last_run``; with ``tick``, also mark ticks up to it as handled (used to
        find missed runs at start). False when the schedule is gone."""
        tick_arg = str(_micros(tick)) if tick is not None else ""
        stored = bool(self._record(keys=[self._key(schedule_id)],
                                   args=[json.dumps(record, separators=(",", ":")), tick_arg]))
        if stored and record.get("status") != "skipped":
            # Read by GET /metrics (qbm_scheduler_last_fire_timestamp_seconds).
            self._redis.set(scheduler_last_fire(self._prefix), f"{time.time():.3f}")
        return stored

    def claim_tick(self, schedule_id: str, tick: datetime, slot: str | None, *, ttl_seconds: int,
                   holder: str) -> bool:
        """Claim one tick for firing (SET NX with a TTL); False when this tick or, for wall-clock
        schedules, this local slot was already claimed."""
        keys = [f"{self._prefix}schedtick:{schedule_id}:{to_iso(tick)}"]
        if slot is not None:
            keys.append(f"{self._prefix}schedslot:{schedule_id}:{slot}")
        return bool(self._claim(keys=keys, args=[ttl_seconds * 1000, holder]))


def next_run_time(schedule: dict[str, Any], now: datetime | None = None) -> str | None:
    """The next fire time as the API shows it (ISO UTC), None while disabled."""
    nxt = next_fire_time(schedule, now or datetime.now(UTC))
    return to_iso(nxt) if nxt else None


def handled_until(schedule: dict[str, Any]) -> datetime:
    """Ticks up to this instant need no catch-up: the later of the last handled tick and the baseline."""
    baseline = parse_iso(schedule["baseline_at"])
    last = schedule.get("last_tick_at")
    return max(baseline, parse_iso(last)) if last else baseline
