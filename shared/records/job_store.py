"""Backup and restore jobs, stored in Redis so the API, the workers and the scheduler share one truth.

Each job is one hash ``{prefix}job:{id}`` holding every field of :class:`shared.records.job.Job` (absent
field = ``None``), plus internal fields the API never shows: ``_created_us`` (the sort score) and one
``step:<name>`` field per recorded worker step. Reads return :class:`Job` records. Public field names never
contain ``:`` or start with ``_``, so internal fields cannot collide with them.

Listing must stay fast with many thousands of jobs, so every job is also a member of sorted sets scored
by its creation time in integer microseconds (exact in a double until the year 2255):
``jobs:all``, ``jobs:status:{s}``, ``jobs:type:{t}`` and ``jobs:st:{s}:{t}``. A page is then one
``ZREVRANGE`` on the one index that matches the filter, and the total is its ``ZCARD``; nothing ever
scans the key space.

Status changes happen inside one Lua script, so two workers (or a worker and a user pressing "cancel")
can never both win a race, and the hash and the indexes never disagree.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline

from shared.records.job import (
    ACTIVE_STATUSES,
    ALLOWED,
    JOB_STATUSES,
    JOB_TYPES,
    PUBLIC_FIELDS,
    TERMINAL_STATUSES,
    Job,
    JobNotFound,
    JobStatus,
    JobType,
    TransitionError,
)
from shared.runtime import timeutil
from shared.runtime.timeutil import text, to_iso

_SCORE_FIELD = "_created_us"
_STEP_PREFIX = "step:"
#: The hash fields a read returns: the contract's, then the backend's id (a field of its own).
READ_FIELDS = (*PUBLIC_FIELDS, "storage_id", "transfer")


class StorageMissing(LookupError):
    """A new job names a storage backend that does not exist (``storage_id``), or names none and no default
    is configured (``storage_id`` None). Nothing was stored."""

    def __init__(self, storage_id: str | None) -> None:
        super().__init__(storage_id)
        self.storage_id = storage_id


@dataclass(frozen=True)
class StorageRef:
    """Where the storage backend of a new job is checked as the job is stored (see ``JobStore.create``):
    config ``{config_prefix}{id}`` must exist; with no id given, ``default_key`` holds the default's id."""

    config_prefix: str
    default_key: str


# --- time-sortable ids --------------------------------------------------------------------------------


def _new_id(micros: int) -> str:
    """26 lowercase hex digits: 16 of creation microseconds, then 10 random.

    Because the id starts with the zero-padded score, sorting ids as strings gives the same order as the
    indexes (score first, then member), so "newest first" is the same order everywhere.
    """
    return f"{micros:016x}{secrets.token_hex(5)}"


def _iso_from_micros(micros: int) -> str:
    return to_iso(datetime.fromtimestamp(micros // 1_000_000, UTC))


# --- Lua ----------------------------------------------------------------------------------------------


def _lua_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _lua_allowed_table() -> str:
    rows = []
    for current, targets in ALLOWED.items():
        inner = ", ".join(f"{t} = true" for t in sorted(targets))
        rows.append(f"{current} = {{{inner}}}")
    return "{" + ", ".join(rows) + "}"


_READ_LUA = _lua_list(READ_FIELDS)

# Creating a job, in one round trip (POST /jobs is the hottest write).
# KEYS: job hash, the four indexes, the named storage config, the default storage pointer.
# ARGV: score, id, mode, storage id, then the hash's other field/value pairs.
# Mode 'none': store ARGV[4] (if any) as is; 'given': the storage config must exist; 'default': the default's
# id is stored. Returns {'ok', storage id}, {'no_default'} or {'no_storage'}; nothing is written unless 'ok'.
_CREATE_LUA = """
local mode, sid = ARGV[3], ARGV[4]
if mode == 'default' then
  sid = redis.call('GET', KEYS[7])
  if not sid then return {'no_default'} end
elseif mode == 'given' and redis.call('EXISTS', KEYS[6]) == 0 then
  return {'no_storage'}
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
if sid ~= '' then
  fields[#fields + 1] = 'storage_id'
  fields[#fields + 1] = sid
end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 2, 5 do redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2]) end
return {'ok', sid}
"""

# KEYS[1] job hash. ARGV: id, target, now (ISO), key prefix, "1" to store ARGV[6] as error, error.
# Returns {"missing"}, {"refused", current} or {"ok", {public field values}}.
_TRANSITION_LUA = f"""
local allowed = {_lua_allowed_table()}
local terminal = {{{", ".join(f"{s} = true" for s in TERMINAL_STATUSES)}}}
local key, id, target, now, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HMGET', key, 'status', 'type', '{_SCORE_FIELD}')
local current, jtype, score = state[1], state[2], state[3]
if not current then return {{'missing'}} end
if not (allowed[current] and allowed[current][target]) then return {{'refused', current}} end
redis.call('ZREM', prefix .. 'jobs:status:' .. current, id)
redis.call('ZADD', prefix .. 'jobs:status:' .. target, score, id)
redis.call('ZREM', prefix .. 'jobs:st:' .. current .. ':' .. jtype, id)
redis.call('ZADD', prefix .. 'jobs:st:' .. target .. ':' .. jtype, score, id)
redis.call('HSET', key, 'status', target)
if target == 'running' and redis.call('HEXISTS', key, 'started_at') == 0 then
  redis.call('HSET', key, 'started_at', now)
end
if terminal[target] then redis.call('HSET', key, 'completed_at', now) end
if target == 'pending' then
  redis.call('HDEL', key, 'completed_at', 'error', 'transfer')
  redis.call('HSET', key, 'progress', '0')
end
if ARGV[5] == '1' then redis.call('HSET', key, 'error', ARGV[6]) end
return {{'ok', redis.call('HMGET', key, {_READ_LUA})}}
"""

# Plain field writes that must not resurrect a deleted job as a half-empty hash.
# KEYS[1] job hash. ARGV[1] = n pairs to set, then 2n values, then names of fields to delete.
# Returns {0} when the job does not exist, else {1, {public field values}}.
_MUTATE_LUA = f"""
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {{0}} end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do redis.call('HSET', key, ARGV[2 + 2 * i], ARGV[3 + 2 * i]) end
for i = 2 + 2 * n, #ARGV do redis.call('HDEL', key, ARGV[i]) end
return {{1, redis.call('HMGET', key, {_READ_LUA})}}
"""

# KEYS[1] job hash; ARGV[1] clamped progress, ARGV[2] "moved/total" bytes or ''. Returns 0 when the job does not
# exist. An ended job's progress stays as it ended (a worker still winding down after a cancel must not move it).
_PROGRESS_LUA = f"""
local state = redis.call('HMGET', KEYS[1], 'status', 'progress')
if not state[1] then return 0 end
local ended = {{{", ".join(f"{s} = true" for s in TERMINAL_STATUSES)}}}
if ended[state[1]] then return 1 end
local new = tonumber(ARGV[1])
if state[1] == 'running' and tonumber(state[2] or '0') > new then return 1 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'transfer', ARGV[2]) end
return 1
"""

# KEYS[1] job hash. Returns 0 when the job does not exist.
_CLEAR_STEPS_LUA = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, {len(_STEP_PREFIX)}) == '{_STEP_PREFIX}' then redis.call('HDEL', KEYS[1], field) end
end
return 1
"""

# One page in one atomic step, so every listed job is really in the filtered status at that moment.
# KEYS[1] index. ARGV: start, stop, job key prefix. Returns {total, {fields}, {fields}, ...}.
_LIST_LUA = f"""
local out = {{redis.call('ZCARD', KEYS[1])}}
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])) do
  out[#out + 1] = redis.call('HMGET', ARGV[3] .. id, {_READ_LUA})
end
return out
"""

# KEYS[1] job hash. ARGV: id, key prefix, statuses... Removes the job and every index entry.
_DELETE_LUA = """
local key, id, prefix = KEYS[1], ARGV[1], ARGV[2]
local jtype = redis.call('HGET', key, 'type')
if not jtype then return 0 end
redis.call('ZREM', prefix .. 'jobs:all', id)
redis.call('ZREM', prefix .. 'jobs:type:' .. jtype, id)
for i = 3, #ARGV do
  redis.call('ZREM', prefix .. 'jobs:status:' .. ARGV[i], id)
  redis.call('ZREM', prefix .. 'jobs:st:' .. ARGV[i] .. ':' .. jtype, id)
end
redis.call('DEL', key)
return 1
"""

_UNSET: Any = object()


def _job(values: list[Any], steps: dict[str, dict] | None = None) -> Job | None:
    """Turn an HMGET of READ_FIELDS into a :class:`Job`; None when the job is gone."""
    raw = dict(zip(READ_FIELDS, (text(v) for v in values), strict=True))
    if raw["id"] is None:
        return None
    metadata = json.loads(raw["metadata"]) if raw["metadata"] else {}
    transfer = _transfer(raw["transfer"])
    # Jobs stored before storage_id had a field of its own kept it in their metadata.
    storage_id = raw["storage_id"] or metadata.pop("storage_id", None)
    return Job(
        id=raw["id"],
        type=JobType(raw["type"]),
        status=JobStatus(raw["status"]),
        collection_name=raw["collection_name"] or "",
        created_at=raw["created_at"] or "",
        shard_id=int(raw["shard_id"]) if raw["shard_id"] is not None else None,
        snapshot_name=raw["snapshot_name"],
        progress=int(raw["progress"] or 0),
        error=raw["error"],
        metadata=metadata,
        started_at=raw["started_at"],
        completed_at=raw["completed_at"],
        storage_id=storage_id,
        transfer=transfer,
        steps=steps or {},
    )


def _transfer(value: str | None) -> tuple[int, int | None] | None:
    """``"moved/total"`` (total may be empty) as numbers; None when absent or unreadable."""
    if not value:
        return None
    moved, _, total = value.partition("/")
    try:
        return int(moved), int(total) if total else None
    except ValueError:
        return None


def _found(job: Job | None, job_id: str) -> Job:
    if job is None:
        raise JobNotFound(job_id)
    return job


def _dump_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable: {exc}") from None


def _check_choice(value: str | None, choices: tuple[str, ...], what: str) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"unknown job {what} {value!r}; expected one of {', '.join(choices)}")


class JobStore:
    """All reads and writes of jobs go through here; see the module docstring for the Redis layout."""

    def __init__(self, redis: Redis, prefix: str = "qbm:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._transition = redis.register_script(_TRANSITION_LUA)
        self._mutate = redis.register_script(_MUTATE_LUA)
        self._progress = redis.register_script(_PROGRESS_LUA)
        self._clear_steps = redis.register_script(_CLEAR_STEPS_LUA)
        self._list = redis.register_script(_LIST_LUA)
        self._delete = redis.register_script(_DELETE_LUA)
        self._create = redis.register_script(_CREATE_LUA)

    # --- keys ---

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}job:{job_id}"

    def _index(self, status: str | None, type: str | None) -> str:
        if status and type:
            return f"{self._prefix}jobs:st:{status}:{type}"
        if status:
            return f"{self._prefix}jobs:status:{status}"
        if type:
            return f"{self._prefix}jobs:type:{type}"
        return f"{self._prefix}jobs:all"

    # --- create / read ---

    def create(
        self,
        type: str,
        collection_name: str,
        *,
        shard_id: int | None = None,
        snapshot_name: str | None = None,
        metadata: dict | None = None,
        storage: StorageRef | None = None,
    ) -> dict:
        """Store a new ``pending`` job and return it; the hash and all four indexes are written by one script,
        so a job is either fully listed or not there at all.

        ``metadata["storage_id"]`` becomes the job's ``storage_id``. With ``storage``, it is checked by the same
        script (that config must exist; when it is absent, the default's id is taken), so a job only ever names
        a backend that existed when it was stored, at no extra round trip. Raises :class:`StorageMissing`
        (nothing stored).
        """
        _check_choice(type, JOB_TYPES, "type")
        if not isinstance(collection_name, str) or not collection_name:
            raise ValueError("collection_name must be a non-empty string")
        if shard_id is not None and (isinstance(shard_id, bool) or not isinstance(shard_id, int)):
            raise ValueError(f"shard_id must be an integer, got {shard_id!r}")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object (a dict)")
        metadata = dict(metadata or {})
        given = metadata.pop("storage_id", None)
        mode, config_key = "none", ""
        if storage is not None and given is None:
            mode = "default"
        elif storage is not None:
            mode, config_key = "given", f"{storage.config_prefix}{given}"
        micros = timeutil.next_micros()
        job_id = _new_id(micros)
        fields: dict[str, str] = {
            "id": job_id,
            "type": str(type),
            "status": str(JobStatus.PENDING),
            "collection_name": collection_name,
            "progress": "0",
            "created_at": _iso_from_micros(micros),
            "metadata": _dump_json(metadata, "metadata"),
            _SCORE_FIELD: str(micros),
        }
        if shard_id is not None:
            fields["shard_id"] = str(shard_id)
        if snapshot_name is not None:
            fields["snapshot_name"] = snapshot_name
        keys = [self._key(job_id), self._index(None, None), self._index("pending", None), self._index(None, type),
                self._index("pending", type), config_key or self._key(job_id),
                storage.default_key if storage is not None else self._key(job_id)]
        outcome = self._create(keys=keys, args=[micros, job_id, mode, "" if given is None else str(given),
                                                *(item for pair in fields.items() for item in pair)])
        status = text(outcome[0])
        if status == "no_default":
            raise StorageMissing(None)
        if status == "no_storage":
            raise StorageMissing(str(given))
        fields["storage_id"] = text(outcome[1]) or None  # type: ignore[assignment]
        return _found(_job([fields.get(f) for f in READ_FIELDS]), job_id)

    def get(self, job_id: str) -> Job:
        """The job, without its step records. Raises :class:`JobNotFound`."""
        return _found(_job(self._redis.hmget(self._key(job_id), READ_FIELDS)), job_id)

    def exists(self, job_id: str) -> bool:
        return bool(self._redis.exists(self._key(job_id)))

    def list(
        self, status: str | None = None, type: str | None = None, page: int = 1, limit: int = 20
    ) -> tuple[list[Job], int]:
        """One page of jobs, newest first, and the number of jobs matching the filter.

        Cost is O(log n + limit) whatever the page: one ZREVRANGE on the index for this filter. A page
        beyond the end is an empty list with the correct total.
        """
        _check_choice(status, JOB_STATUSES, "status")
        _check_choice(type, JOB_TYPES, "type")
        if page < 1:
            raise ValueError(f"page must be 1 or more, got {page}")
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, got {limit}")
        start = (page - 1) * limit
        reply = self._list(
            keys=[self._index(status, type)], args=[start, start + limit - 1, f"{self._prefix}job:"]
        )
        total = int(reply[0])
        items = [job for job in (_job(values) for values in reply[1:]) if job is not None]
        return items, total

    def counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each (type, status): one ZCARD per index in one round trip, cheap
        enough to run on every metrics scrape however many jobs are stored."""
        pairs = [(t, s) for t in JOB_TYPES for s in JOB_STATUSES]
        pipe = self._redis.pipeline(transaction=False)
        for t, s in pairs:
            pipe.zcard(self._index(s, t))
        return {pair: int(n) for pair, n in zip(pairs, pipe.execute(), strict=True)}

    # --- status ---

    def transition(self, job_id: str, target: str, *, error: str | None = None) -> Job:
        """Move the job to ``target`` if its current status allows it, atomically; return the job.

        Sets ``started_at`` the first time the job runs, ``completed_at`` on completed/failed/cancelled;
        a retry (back to pending) clears ``completed_at`` and ``error`` and resets ``progress`` to 0 so
        the new attempt reports its own progress. ``error``, when given, is stored after that.
        Raises :class:`JobNotFound` or :class:`TransitionError` (and then nothing changed).
        """
        _check_choice(target, JOB_STATUSES, "status")
        reply = self._transition(
            keys=[self._key(job_id)],
            args=[
                job_id,
                target,
                _iso_from_micros(timeutil.now_micros()),
                self._prefix,
                "1" if error is not None else "0",
                error or "",
            ],
        )
        outcome = text(reply[0])
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome == "refused":
            raise TransitionError(job_id, text(reply[1]) or "?", target)
        return _found(_job(reply[1]), job_id)

    # --- plain field updates ---

    def _write(self, job_id: str, set_fields: dict[str, str], del_fields: Iterable[str] = ()) -> Job:
        args: list[str | int] = [len(set_fields)]
        for name, value in set_fields.items():
            args += [name, value]
        args += list(del_fields)
        reply = self._mutate(keys=[self._key(job_id)], args=args)
        if not int(reply[0]):
            raise JobNotFound(job_id)
        return _found(_job(reply[1]), job_id)

    def set_progress(self, job_id: str, progress: int, *, moved: int | None = None, total: int | None = None
                     ) -> None:
        """Record progress, clamped to 0..100, and with ``moved`` the bytes moved so far of ``total`` (None:
        unknown), shown as ``metadata.bytes_done`` / ``bytes_total``. While running progress never goes down,
        so a late or out-of-order report from a worker cannot make the bar jump backwards; once the job ended it
        does not change at all. A retry clears the byte counts."""
        value = max(0, min(100, int(progress)))
        transfer = "" if moved is None else f"{int(moved)}/{'' if total is None else int(total)}"
        if not int(self._progress(keys=[self._key(job_id)], args=[value, transfer])):
            raise JobNotFound(job_id)

    def update(self, job_id: str, *, snapshot_name: str | None = _UNSET, error: str | None = _UNSET) -> Job:
        """Set plain fields (not status: that is :meth:`transition`). ``None`` clears a field; a field
        not passed is left alone. Returns the job."""
        set_fields: dict[str, str] = {}
        del_fields: list[str] = []
        for name, value in (("snapshot_name", snapshot_name), ("error", error)):
            if value is _UNSET:
                continue
            if value is None:
                del_fields.append(name)
            else:
                set_fields[name] = str(value)
        return self._write(job_id, set_fields, del_fields)

    def merge_metadata(self, job_id: str, values: dict) -> Job:
        """Shallow-merge ``values`` into the job's metadata and return the job.

        Read-modify-write under WATCH, so concurrent merges of different keys all survive.
        """
        if not isinstance(values, dict):
            raise ValueError("metadata values must be a dict")
        _dump_json(values, "metadata")
        key = self._key(job_id)

        def merge(pipe: Pipeline) -> None:
            status, raw = pipe.hmget(key, ["status", "metadata"])
            if status is None:
                raise JobNotFound(job_id)
            metadata = json.loads(raw) if raw else {}
            metadata.update(values)
            pipe.multi()
            pipe.hset(key, "metadata", _dump_json(metadata, "metadata"))
            pipe.hmget(key, READ_FIELDS)

        results = self._redis.transaction(merge, key)
        return _found(_job(results[-1]), job_id)

    # --- internal step records (never part of the public job) ---

    def record_step(self, job_id: str, step: str, result: dict) -> None:
        """Remember that a worker step finished and what it produced, so a retried or re-delivered job
        can skip work already done."""
        if not step:
            raise ValueError("step name must not be empty")
        self._write(job_id, {_STEP_PREFIX + step: _dump_json(result, "step result")})

    def claim_step(self, job_id: str, step: str, result: dict) -> bool:
        """Record ``step`` only if no one has: True for the one caller that did. Several workers finishing the
        last items of a fanned-out step at once all see it complete; only the claimer sends the next step."""
        if not self.exists(job_id):
            raise JobNotFound(job_id)
        return bool(self._redis.hsetnx(self._key(job_id), _STEP_PREFIX + step, _dump_json(result, "step result")))

    def get_with_steps(self, job_id: str) -> Job:
        """The job with its step records (``Job.steps``), from one HGETALL. Raises :class:`JobNotFound`."""
        raw = {text(field) or "": value for field, value in self._redis.hgetall(self._key(job_id)).items()}
        steps = {name[len(_STEP_PREFIX):]: json.loads(value) for name, value in raw.items()
                 if name.startswith(_STEP_PREFIX)}
        return _found(_job([raw.get(f) for f in READ_FIELDS], steps) if raw else None, job_id)

    def clear_steps(self, job_id: str) -> None:
        """Forget all step records (a fresh start). Raises :class:`JobNotFound`."""
        if not int(self._clear_steps(keys=[self._key(job_id)])):
            raise JobNotFound(job_id)

    # --- queries and housekeeping ---

    def count_active_using_storage(self, storage_id: str) -> int:
        """How many pending or running jobs name this storage config in ``metadata.storage_id``.

        Used to refuse deleting a storage config that work still depends on. Only the pending and
        running indexes are read; they stay small because jobs finish.
        """
        pipe = self._redis.pipeline(transaction=False)
        for status in ACTIVE_STATUSES:
            pipe.zrange(self._index(status, None), 0, -1)
        ids = {text(i) for members in pipe.execute() for i in members}
        if not ids:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self._key(job_id or ""), ["storage_id", "metadata"])
        count = 0
        for own, raw in pipe.execute():
            if own is None and raw:  # stored before storage_id had a field of its own
                metadata = json.loads(raw)
                own = metadata.get("storage_id") if isinstance(metadata, dict) else None
            if text(own) == storage_id:
                count += 1
        return count

    def delete(self, job_id: str) -> bool:
        """Remove the job, its step records and every index entry at once (for retention of old jobs).
        Returns False when there was no such job."""
        reply = self._delete(keys=[self._key(job_id)], args=[job_id, self._prefix, *JOB_STATUSES])
        return bool(int(reply))


__all__ = [
    "ACTIVE_STATUSES",
    "ALLOWED",
    "JOB_STATUSES",
    "JOB_TYPES",
    "PUBLIC_FIELDS",
    "TERMINAL_STATUSES",
    "Job",
    "JobNotFound",
    "JobStatus",
    "JobStore",
    "JobType",
    "StorageMissing",
    "StorageRef",
    "TransitionError",
]
