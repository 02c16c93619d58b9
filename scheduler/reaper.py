"""The reaper: no job stays ``pending`` or ``running`` forever because its message was lost.

A job moves forward only through its Dramatiq message. Dramatiq redelivers the message of a worker that died
(after its heartbeat is 15 s old), but some ways of losing the message leave nothing to redeliver, and the job
would then show ``running`` for ever:

* Redis restarted (or failed over) while a step failed: the step's retry could not be enqueued, Dramatiq logs
  that and acknowledges the message anyway;
* a Dramatiq worker lost its connection while holding delayed messages (a retry's backoff, a wait for a busy
  collection) in memory: it forgets them, but they stay assigned to it in Redis, so they are never
  redelivered while that worker lives;
* the message was dead-lettered, or the queue lost data (a Redis crash without AOF, a purge by hand).

Every pass (in the scheduler leader, about every ``grace / 4`` s, at most 10 s) looks at the pending and running
jobs whose last sign of life is older than ``QBM_REAPER_GRACE_SECONDS``. Signs of life are the worker's
per-job heartbeat (:mod:`shared.adapters.heartbeat`: beaten while a step runs, and once more when the job goes back to
the queue) or, without one, the job's start (running) or creation (pending). Such a job is left alone while a
message for it is still live in Redis: in the queue's message hash (waiting, being processed, or held by a dead
worker that Dramatiq will redeliver), or delayed with an ETA less than the grace period ago or still waiting
in the delay queue. Otherwise its lost delayed messages are deleted (so Dramatiq can never deliver them too)
and the job is sent again from its first unfinished step, through the same enqueuer the API uses -- at most
``MAX_REQUEUES`` times; after that it is failed with a reason that says what happened.

Decisions use the Redis server's clock (the heartbeats are written with it). A pass changes a job only if its
heartbeat is still the one the pass read (one Lua script), so two schedulers that both believe they lead for
a moment cannot both re-enqueue it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.adapters.heartbeat import heartbeat_key, redis_now_ms
from shared.pipeline import dramatiq_keys
from shared.pipeline.chains import queue_for
from shared.records.job_store import JobNotFound, JobStore, TransitionError
from shared.runtime.timeutil import parse_iso, text

log = logging.getLogger("qbm.reaper")

#: How many times one job is re-enqueued by the reaper before it is failed instead.
MAX_REQUEUES = 3
REAPED_FIELD = "_reaped"

# KEYS[1] heartbeat set, KEYS[2] job hash. ARGV: job id, the heartbeat score the pass saw ('' = none), now (ms).
# Returns the job's new re-enqueue count, or -1 when something moved since the pass looked (a worker beat, the
# job ended, another reaper got there first). Bumping the heartbeat gives the new message a full grace period.
_CLAIM_LUA = f"""
local seen = ARGV[2]
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if seen == '' then
  if current then return -1 end
elseif (not current) or tonumber(current) ~= tonumber(seen) then
  return -1
end
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'running' and status ~= 'pending' then return -1 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return redis.call('HINCRBY', KEYS[2], '{REAPED_FIELD}', 1)
"""

Enqueue = Callable[[str], None]


@dataclass(frozen=True)
class Reaped:
    """What one pass did to one job: ``requeued`` (sent again) or ``failed``."""

    job_id: str
    action: str
    status: str
    silent_seconds: float


@dataclass
class _Message:
    hash_key: str
    field: bytes
    delayed: bool
    eta_ms: int | None
    waiting: bool


class Reaper:
    """Finds pending or running jobs that nothing will move forward any more, and sends them again.

    Why: a job only advances through its Dramatiq message, and some failures lose the message without a
    trace (see the module docstring); without the reaper such a job would read ``running`` for ever. Runs
    in the scheduler leader only (one pass at a time across the deployment), every :attr:`interval` seconds.
    """

    def __init__(self, client: redis.Redis, prefix: str, enqueue: Enqueue, grace_seconds: int, *,
                 max_requeues: int = MAX_REQUEUES) -> None:
        self.client = client
        self.prefix = prefix
        self.jobs = JobStore(client, prefix)
        self.enqueue = enqueue
        self.grace_ms = int(grace_seconds * 1000)
        self.max_requeues = max_requeues
        #: Seconds between passes.
        self.interval = max(1.0, min(10.0, grace_seconds / 4))
        self._claim = client.register_script(_CLAIM_LUA)
        self._next_pass = 0.0

    def maybe_run(self) -> list[Reaped]:
        """Run a pass if one is due (callers poll this about every second)."""
        now = time.monotonic()
        if now < self._next_pass:
            return []
        self._next_pass = now + self.interval
        return self.run_once()

    def run_once(self) -> list[Reaped]:
        now_ms = redis_now_ms(self.client)
        hb_key = heartbeat_key(self.prefix)
        pipe = self.client.pipeline(transaction=True)  # one consistent picture of heartbeats and statuses
        pipe.zrange(hb_key, 0, -1, withscores=True)
        pipe.zrange(f"{self.prefix}jobs:status:running", 0, -1, withscores=True)
        pipe.zrange(f"{self.prefix}jobs:status:pending", 0, -1, withscores=True)
        beats_raw, running_raw, pending_raw = pipe.execute()
        beats = {text(m): int(s) for m, s in beats_raw}
        active = {text(m): ("running", int(s) // 1000) for m, s in running_raw}
        active.update({text(m): ("pending", int(s) // 1000) for m, s in pending_raw})

        ended = [job_id for job_id in beats if job_id not in active]
        if ended:  # a worker could not remove its entry (or the job was deleted): forget it
            self.client.zrem(hb_key, *ended)

        silent = {job_id: (status, beats.get(job_id, created_ms))
                  for job_id, (status, created_ms) in active.items()
                  if beats.get(job_id, created_ms) < now_ms - self.grace_ms}
        if not silent:
            return []
        details = self._details(list(silent))
        silent = {job_id: (status, self._last_sign(job_id, since, beats, details[job_id]))
                  for job_id, (status, since) in silent.items() if job_id in details}
        silent = {job_id: v for job_id, v in silent.items() if v[1] < now_ms - self.grace_ms}
        if not silent:
            return []
        messages = self._messages({queue_for(details[j]["type"]) for j in silent})
        done: list[Reaped] = []
        for job_id, (status, last_ms) in silent.items():
            mine = messages.get(job_id, [])
            if any(self._live(m, now_ms) for m in mine):
                continue
            outcome = self._reap(job_id, status, beats.get(job_id), mine, now_ms - last_ms, now_ms)
            if outcome is not None:
                done.append(outcome)
        return done

    # ----- reading ------------------------------------------------------------------------------------------

    def _details(self, job_ids: list[str]) -> dict[str, dict[str, str | None]]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(f"{self.prefix}job:{job_id}", ["type", "started_at"])
        out = {}
        for job_id, (jtype, started) in zip(job_ids, pipe.execute(), strict=True):
            if jtype is not None:
                out[job_id] = {"type": text(jtype), "started_at": text(started) if started else None}
        return out

    @staticmethod
    def _last_sign(job_id: str, since: int, beats: dict[str, int], detail: dict[str, str | None]) -> int:
        """The heartbeat if there is one; else the later of creation and start (a job that never beat)."""
        if job_id in beats:
            return beats[job_id]
        started = detail.get("started_at")
        return max(since, int(parse_iso(started).timestamp() * 1000)) if started else since

    def _messages(self, queues: set[str]) -> dict[str, list[_Message]]:
        """Every message of these queues (and their delay queues) by job id. Read only when some job is silent,
        so a healthy deployment never pays for it."""
        pipe = self.client.pipeline(transaction=False)
        for queue in sorted(queues):
            pipe.hgetall(dramatiq_keys.messages_hash(self.prefix, queue))
            pipe.hgetall(dramatiq_keys.messages_hash(self.prefix, queue, delayed=True))
            pipe.lrange(dramatiq_keys.queue_list(self.prefix, queue, delayed=True), 0, -1)
        replies = pipe.execute()
        found: dict[str, list[_Message]] = {}
        for index, queue in enumerate(sorted(queues)):
            ready, delayed, delay_list = replies[3 * index: 3 * index + 3]
            waiting = set(delay_list)
            for hash_key, entries, is_delayed in (
                    (dramatiq_keys.messages_hash(self.prefix, queue), ready, False),
                    (dramatiq_keys.messages_hash(self.prefix, queue, delayed=True), delayed, True)):
                for field, data in entries.items():
                    try:
                        body = json.loads(data)
                        job_id = str(body["args"][0])
                        eta = body.get("options", {}).get("eta")
                    except (ValueError, KeyError, IndexError, TypeError):
                        continue  # not one of ours
                    found.setdefault(job_id, []).append(_Message(
                        hash_key, field, is_delayed, int(eta) if isinstance(eta, int | float) else None,
                        field in waiting))
        return found

    def _live(self, message: _Message, now_ms: int) -> bool:
        """Could Dramatiq still deliver this message? A ready message always can (waiting, being processed, or
        redelivered once its dead worker's heartbeat times out). A delayed one is moved to the ready queue by
        the worker holding it within about a second of its ETA; one overdue by the whole grace period, and not
        waiting in the delay queue itself, was forgotten by that worker."""
        if not message.delayed or message.waiting or message.eta_ms is None:
            return True
        return message.eta_ms >= now_ms - self.grace_ms

    # ----- acting -------------------------------------------------------------------------------------------

    def _reap(self, job_id: str, status: str, seen: int | None, lost: list[_Message], silent_ms: int,
              now_ms: int) -> Reaped | None:
        job_key = f"{self.prefix}job:{job_id}"
        count = int(self._claim(keys=[heartbeat_key(self.prefix), job_key],
                                args=[job_id, "" if seen is None else seen, now_ms]))
        if count < 0:
            return None
        for message in lost:  # Dramatiq skips a message whose data is gone, wherever its id still sits
            self.client.hdel(message.hash_key, message.field)
        silent_s = round(silent_ms / 1000, 1)
        extra = {"job_id": job_id}
        if count > self.max_requeues:
            what = ("the worker running this job stopped responding" if status == "running"
                    else "this job's queued message was lost")
            reason = (f"{what}: no heartbeat and no queued message for {silent_s:g} s, and re-enqueueing it "
                      f"{self.max_requeues} times did not help; retry the job to resume it")
            try:  # a pending job cannot fail (it never ran); it is cancelled with the reason, like a failed hand-off
                self.jobs.transition(job_id, "failed" if status == "running" else "cancelled", error=reason)
            except (JobNotFound, TransitionError):
                return None
            self.client.hdel(job_key, REAPED_FIELD)  # a user's retry starts with a clean count
            self.client.zrem(heartbeat_key(self.prefix), job_id)
            log.warning("reaper failed job %s: %s", job_id, reason, extra=extra)
            return Reaped(job_id, "failed", status, silent_s)
        self.enqueue(job_id)
        log.warning("reaper re-enqueued %s job %s (%d of %d): no heartbeat and no queued message for %g s",
                    status, job_id, count, self.max_requeues, silent_s, extra=extra)
        return Reaped(job_id, "requeued", status, silent_s)

