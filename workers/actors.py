"""Dramatiq actors: one per step of each chain. Importing this module installs the broker.

Every actor runs the same frame (:func:`run_step`): skip messages for jobs that ended, honour a
cancel, take the collection's lease (or wait for it without failing), run the step, record it, and
send the next step. Failures are judged in :mod:`workers.errors`: transient ones are retried by
Dramatiq with backoff, permanent ones and the last retry end the job ``failed`` with a readable reason.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import CurrentMessage

from shared.adapters.heartbeat import JobHeartbeat, beat_interval
from shared.adapters.locks import Lease
from shared.pipeline.chains import STEPS, family, queue_for
from shared.pipeline.dispatch import send_step
from shared.records.job_store import JobNotFound, TransitionError
from workers import backup, restore
from workers.broker import install_broker
from workers.context import Context, get_context
from workers.errors import JobCancelled, PermanentError, describe, is_transient
from workers.retention_hook import apply_schedule_retention

broker = install_broker()
log = logging.getLogger("qbm.worker")

MAX_RETRIES = 6
MIN_BACKOFF_MS = 2_000
MAX_BACKOFF_MS = 60_000
#: Dramatiq's TimeLimit defaults to 10 minutes; snapshot steps of big collections take hours.
TIME_LIMIT_MS = 7 * 24 * 3600 * 1000
LOCK_WAIT_MS = 3_000

Step = Callable[[Context, dict], None]
STEP_FUNCTIONS: dict[str, dict[str, Step]] = {
    "backup": {"create": backup.create, "transfer": backup.transfer, "finalize": backup.finalize},
    "restore": {"prepare": restore.prepare, "recover": restore.recover, "verify": restore.verify},
}


def _retry_when(retries: int, exc: BaseException) -> bool:
    return is_transient(exc) and retries < MAX_RETRIES


def _attempt() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message else 0


def _lease(ctx: Context, job: dict) -> Lease:
    collection = restore.target_collection(job) if family(job["type"]) == "restore" else job["collection_name"]
    return Lease(ctx.redis, ctx.lease_key(job, collection), job["id"])


def _cleanup_cancelled(ctx: Context, job: dict) -> None:
    if family(job["type"]) == "backup":
        backup.cleanup_cancelled(ctx, job)
    log.info("job cancelled; cleaned up", extra={"job_id": job["id"], "collection": job["collection_name"]})


def _fail(ctx: Context, job_id: str, reason: str) -> None:
    try:
        ctx.jobs.transition(job_id, "failed", error=reason)
    except TransitionError:
        pass  # cancelled meanwhile: the user's decision stands
    log.warning("job failed: %s", reason, extra={"job_id": job_id})


def run_step(step: str, job_id: str) -> None:
    ctx = get_context()
    try:
        job = ctx.jobs.get(job_id)
    except JobNotFound:
        log.warning("message for unknown job dropped", extra={"job_id": job_id, "step": step})
        return
    extra = {"job_id": job_id, "step": step, "collection": job["collection_name"]}
    lease = _lease(ctx, job)
    if job["status"] == "cancelled":
        _cleanup_cancelled(ctx, job)
        lease.release()
        return
    if job["status"] in ("completed", "failed"):
        return  # a stale or duplicate message
    if not lease.acquire():
        log.info("collection busy with job %s; waiting", lease.holder_now(), extra=extra)
        send_step(broker, job["type"], step, job_id, delay_ms=LOCK_WAIT_MS + random.randint(0, 1000))
        return
    if job["status"] == "pending":
        try:
            job = ctx.jobs.transition(job_id, "running")
        except TransitionError:
            job = ctx.jobs.get(job_id)
            if job["status"] != "running":  # cancelled between our read and the transition
                lease.release()
                return
    lease.keep_renewed()
    # The reaper's sign of life for this job while the step runs (see shared/adapters/heartbeat.py).
    heartbeat = JobHeartbeat(ctx.redis, ctx.config.key_prefix, job_id,
                             beat_interval(ctx.config.reaper_grace_seconds)).start()
    ended = True
    try:
        log.info("step started", extra=extra)
        STEP_FUNCTIONS[family(job["type"])][step](ctx, job)
        ended = _advance(ctx, job, step)
    except JobCancelled:
        _cleanup_cancelled(ctx, ctx.jobs.get(job_id))
    except Exception as exc:
        if is_transient(exc) and _attempt() < MAX_RETRIES:
            ended = False
            log.warning("step failed, will retry: %s", describe(exc), extra=extra)
            lease.stop_renewing()
            raise
        if not isinstance(exc, PermanentError | JobCancelled) and not is_transient(exc):
            log.exception("step failed unexpectedly", extra=extra)
        reason = describe(exc)
        if is_transient(exc):
            reason = f"gave up after {MAX_RETRIES + 1} attempts: {reason}"
        _fail(ctx, job_id, reason)
    finally:
        heartbeat.stop(job_ended=ended)
        if ended:
            lease.release()
            ctx.record_job_end(job_id)  # for GET /metrics; never raises
        else:
            lease.stop_renewing()


def _advance(ctx: Context, job: dict, step: str) -> bool:
    """Send the next step, or end the job when this was the last. Returns True when the job ended."""
    chain = STEPS[job["type"]]
    index = chain.index(step)
    if index + 1 < len(chain):
        if ctx.jobs.get(job["id"])["status"] == "cancelled":
            raise JobCancelled(job["id"])
        send_step(broker, job["type"], chain[index + 1], job["id"])
        return False
    apply_schedule_retention(ctx, job)  # scheduled backups only; never raises
    ctx.jobs.set_progress(job["id"], 100)
    try:
        ctx.jobs.transition(job["id"], "completed")
    except TransitionError:
        pass  # cancelled at the last moment: the backup is complete and stays
    log.info("job completed", extra={"job_id": job["id"], "collection": job["collection_name"]})
    return True


def _declare(fam: str, step: str) -> dramatiq.Actor:
    def fn(job_id: str) -> None:
        run_step(step, job_id)

    fn.__name__ = f"{fam}_{step}"
    return dramatiq.actor(
        fn,
        actor_name=f"{fam}_{step}",
        queue_name=queue_for(fam),
        retry_when=_retry_when,
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
        time_limit=TIME_LIMIT_MS,
    )


ACTORS = {f"{fam}_{step}": _declare(fam, step) for fam, steps in STEP_FUNCTIONS.items() for step in steps}
