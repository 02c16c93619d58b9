"""The frame every step runs in (:func:`run_step`), and the one thread that keeps a running step alive.

A step function only does its own work: it gets the job (read once, with its step records) and returns what
it wants recorded. Everything else is the frame's, so no step repeats it:

* messages for jobs that ended are dropped, a cancelled job is cleaned up instead of run;
* a step that already recorded its result is not run again (a redelivery after a crash, a duplicate);
* one job at a time per collection (or shard): the collection's :class:`~shared.adapters.locks.Lease`, or the
  step waits and comes back later without failing;
* while the step runs, :class:`StepPulse` renews the lease and beats the job's heartbeat (for the reaper);
* then the result is recorded and the next step sent, or the job completed; failures are judged by
  :mod:`workers.errors`: transient ones are raised back to Dramatiq, whose Retries middleware runs the step
  again with backoff; permanent ones and the last retry end the job ``failed`` with a readable reason.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import CurrentMessage

from shared.adapters.heartbeat import JobHeartbeat, beat_interval
from shared.adapters.locks import Lease
from shared.pipeline.chains import STEPS, fan_out_items, item_record
from shared.pipeline.dispatch import send_next, send_step
from shared.records.job import Job, JobStatus
from shared.records.job_store import JobNotFound, TransitionError
from shared.runtime.logs import bind_log_context
from shared.runtime.timeutil import parse_iso, utcnow_iso
from workers import backup
from workers.context import Context
from workers.errors import JobCancelled, TryLater, describe, is_expected, is_transient
from workers.retention_hook import apply_schedule_retention

log = logging.getLogger("qbm.worker")

#: A step: does its work for the job and returns what to record for it (None: just that it is done).
Step = Callable[[Context, Job], dict | None]
#: One item of a fanned-out step (a backup set's shard): the same, for that item.
ItemStep = Callable[[Context, Job, int], dict | None]
#: Asked before a pending job starts: None when it may, else why it must wait (it stays ``pending``, and fails
#: with that reason once it has waited ``QBM_SET_WAIT_SECONDS``).
Gate = Callable[[Context, Job], str | None]

MAX_RETRIES = 6
MIN_BACKOFF_MS = 2_000
MAX_BACKOFF_MS = 60_000
LOCK_WAIT_MS = 3_000
GATE_WAIT_MS = 5_000


def attempt() -> int:
    """How many times Dramatiq has retried the message being processed (0 on the first run)."""
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message else 0


class StepPulse:
    """One background thread per running step: renews the collection's lease and beats the job's heartbeat.

    Why: a step can sit in one call for hours (Qdrant building a snapshot with ``wait=true``), so neither
    can be done between chunks. The lease would expire and let a second job write the same collection; the
    reaper would take the silent job for one whose worker died. Redis errors are skipped: the lease's TTL and
    the reaper's grace both leave room for several missed ticks."""

    def __init__(self, lease: Lease, heartbeat: JobHeartbeat, interval: float) -> None:
        self.lease, self.heartbeat = lease, heartbeat
        self.interval = min(interval, lease.ttl_ms / 3000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"pulse:{heartbeat.job_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.heartbeat.beat()
            try:
                self.lease.renew()
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.debug("lease not renewed: %s", exc)

    def __enter__(self) -> StepPulse:
        self.heartbeat.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_step(ctx: Context, broker: dramatiq.Broker, steps: dict[str, Step], step: str, job_id: str,
             item: int | None = None, *, item_steps: dict[str, ItemStep] | None = None,
             gate: Gate | None = None) -> None:
    """Run ``step`` of job ``job_id`` (its ``item``, for a fanned-out step) in the frame described in the module
    docstring.

    ``steps`` maps the step names of the job's chain to their functions, ``item_steps`` those that may fan out;
    ``broker`` receives the next step (or this one again, delayed, while another job holds the collection)."""
    try:
        job = ctx.jobs.get_with_steps(job_id)
    except JobNotFound:
        log.warning("message for unknown job dropped", extra={"job_id": job_id, "step": step})
        return
    bind_log_context(collection=job.collection_name)  # reset with the message's context (workers.broker)
    extra = {"job_id": job_id, "step": step, "collection": job.collection_name}
    record = step if item is None else item_record(step, item)
    if item is not None:
        extra["item"] = item
    lease = Lease(ctx.redis, ctx.lease_key(job), job_id)
    if job.status == JobStatus.CANCELLED:
        _cleanup_cancelled(ctx, job)
        lease.release()
        return
    if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        return  # a stale or duplicate message
    if not lease.acquire():
        log.info("collection busy with job %s; waiting", lease.holder_now(), extra=extra)
        send_step(broker, job.type, step, job_id, item=item, delay_ms=LOCK_WAIT_MS + random.randint(0, 1000))
        return
    if job.status == JobStatus.PENDING and gate is not None and _held_at_gate(ctx, broker, job, step, gate, extra):
        lease.release()
        return
    if job.status == JobStatus.PENDING:
        try:
            ctx.jobs.transition(job_id, JobStatus.RUNNING)
        except TransitionError:
            if ctx.jobs.get(job_id).status != JobStatus.RUNNING:  # cancelled between our read and now
                lease.release()
                return
    heartbeat = JobHeartbeat(ctx.redis, ctx.config.key_prefix, job_id)
    ended = True
    try:
        with StepPulse(lease, heartbeat, beat_interval(ctx.config.reaper_grace_seconds)):
            if record not in job.steps:
                log.info("step started", extra=extra)
                result = (steps[step](ctx, job) if item is None
                          else (item_steps or {})[step](ctx, job, item))
                ctx.jobs.record_step(job_id, record, result if result is not None else {"at": utcnow_iso()})
            ended = _advance(ctx, broker, job, step, item)
    except TryLater as later:
        ended = False
        log.info("step waits: %s", later, extra=extra)
        send_step(broker, job.type, step, job_id, item=item, delay_ms=later.delay_ms + random.randint(0, 500))
    except JobCancelled:
        _cleanup_cancelled(ctx, ctx.jobs.get_with_steps(job_id))
    except Exception as exc:
        if is_transient(exc) and attempt() < MAX_RETRIES:
            ended = False
            _note_retry(ctx, job_id, attempt() + 2, describe(exc), extra)
            # Dramatiq's Retry: its backoff (or the wait Qdrant asked for, when longer), and Dramatiq logs no
            # traceback for an expected retry.
            raise dramatiq.Retry(describe(exc), delay=_asked_delay_ms(exc)) from exc
        if not is_expected(exc) and not is_transient(exc):
            log.exception("step failed unexpectedly", extra=extra)
        reason = describe(exc)
        if is_transient(exc):
            reason = f"gave up after {MAX_RETRIES + 1} attempts: {reason}"
        _fail(ctx, job_id, reason)
    finally:
        heartbeat.finish(job_ended=ended)
        if ended:
            lease.release()
            ctx.record_job_end(job_id)  # for GET /metrics; never raises


def _asked_delay_ms(exc: BaseException) -> int | None:
    """Qdrant's Retry-After as a delay in ms when it is longer than the backoff would be (None: the backoff)."""
    seconds = getattr(exc, "retry_after", None)
    if seconds is None:
        return None
    backoff_ms = min(MIN_BACKOFF_MS * 2 ** attempt(), MAX_BACKOFF_MS)
    return max(int(seconds * 1000), backoff_ms)


def _note_retry(ctx: Context, job_id: str, next_attempt: int, reason: str, extra: dict) -> None:
    """An expected retry is one WARNING line, and the job shows it: ``metadata.attempt`` (the attempt coming
    next, of MAX_RETRIES + 1) and ``metadata.last_error``."""
    log.warning("step failed, will retry (attempt %d of %d next): %s", next_attempt, MAX_RETRIES + 1, reason,
                extra=extra)
    try:
        ctx.jobs.merge_metadata(job_id, {"attempt": next_attempt, "last_error": reason})
    except Exception as exc:  # noqa: BLE001 - showing the retry must not stop it
        log.debug("could not record the retry on the job: %s", exc, extra=extra)


def _held_at_gate(ctx: Context, broker: dramatiq.Broker, job: Job, step: str, gate: Gate, extra: dict) -> bool:
    """True when the gate keeps the pending job waiting (its message comes back later; ``metadata.waiting``
    says why) or, after ``QBM_SET_WAIT_SECONDS`` of waiting, failed it with that reason."""
    reason = gate(ctx, job)
    if reason is None:
        if job.metadata.get("waiting"):
            ctx.jobs.merge_metadata(job.id, {"waiting": None, "waiting_since": None})
        return False
    since = job.metadata.get("waiting_since") or utcnow_iso()
    waited = (parse_iso(utcnow_iso()) - parse_iso(since)).total_seconds()
    if waited >= ctx.config.set_wait_seconds:
        try:
            ctx.jobs.transition(job.id, JobStatus.RUNNING)
        except TransitionError:
            return True  # cancelled meanwhile
        _fail(ctx, job.id, f"{reason}; gave up after waiting {int(waited)} s")
        return True
    ctx.jobs.merge_metadata(job.id, {"waiting": reason, "waiting_since": since})
    log.info("job waits: %s", reason, extra=extra)
    send_step(broker, job.type, step, job.id, delay_ms=GATE_WAIT_MS + random.randint(0, 1000))
    return True


def _advance(ctx: Context, broker: dramatiq.Broker, job: Job, step: str, item: int | None = None) -> bool:
    """Send the next step, or end the job when this was the last. Returns True when the job ended.

    An item of a fanned-out step advances only when it finds every item recorded and is the one that claims
    the step as a whole."""
    chain = STEPS[job.type]
    index = chain.index(step)
    done = ctx.jobs.get_with_steps(job.id).steps
    if item is not None:
        items = fan_out_items(job.type, step, done) or []
        if any(item_record(step, i) not in done for i in items):
            return False
        if step not in done and not ctx.jobs.claim_step(job.id, step, {"at": utcnow_iso(), "items": len(items)}):
            return False
        done = ctx.jobs.get_with_steps(job.id).steps
    if index + 1 < len(chain):
        if ctx.jobs.get(job.id).status == JobStatus.CANCELLED:
            raise JobCancelled(job.id)
        send_next(broker, job.type, chain[index + 1], job.id, done)
        return False
    apply_schedule_retention(ctx, job)  # scheduled backups only; never raises
    ctx.jobs.set_progress(job.id, 100)
    try:
        ctx.jobs.transition(job.id, JobStatus.COMPLETED)
    except TransitionError:
        pass  # cancelled at the last moment: the backup is complete and stays
    log.info("job completed", extra={"job_id": job.id, "collection": job.collection_name})
    return True


def _cleanup_cancelled(ctx: Context, job: Job) -> None:
    if job.family == "backup":
        backup.cleanup_cancelled(ctx, job)
    log.info("job cancelled; cleaned up", extra={"job_id": job.id, "collection": job.collection_name})


def _fail(ctx: Context, job_id: str, reason: str) -> None:
    try:
        ctx.jobs.transition(job_id, JobStatus.FAILED, error=reason)
    except TransitionError:
        pass  # cancelled meanwhile: the user's decision stands
    log.warning("job failed: %s", reason, extra={"job_id": job_id})
