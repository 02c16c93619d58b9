"""How the API (and the scheduler) hand a stored job to the workers.

Only the job id travels in the message; the worker reads everything else from the job hash. The first
step that has not recorded a result is enqueued, so a retried job resumes where it stopped.
Messages are built by actor *name*, so callers need the broker but not the worker modules.
"""

from __future__ import annotations

import dramatiq

from shared.intake.submit import Enqueue
from shared.pipeline.chains import STEPS, actor_name, fan_out_items, item_record, next_step, queue_for
from shared.records.job_store import JobStore


def send_step(broker: dramatiq.Broker, job_type: str, step: str, job_id: str, *, item: int | None = None,
              delay_ms: int | None = None) -> None:
    """One message for ``step`` of the job (for one ``item`` of a fanned-out step)."""
    message = dramatiq.Message(
        queue_name=queue_for(job_type),
        actor_name=actor_name(job_type, step),
        args=(job_id,) if item is None else (job_id, item),
        kwargs={},
        options={},
    )
    broker.enqueue(message, delay=delay_ms)


def send_next(broker: dramatiq.Broker, job_type: str, step: str, job_id: str, done: dict) -> None:
    """Send ``step``: one message, or one per item not yet recorded when the step fans out (see
    :func:`shared.pipeline.chains.fan_out_items`). When every item is recorded but the step is not (a crash
    in between), one item is sent again: it finds its record and completes the step."""
    items = fan_out_items(job_type, step, done)
    if not items:
        send_step(broker, job_type, step, job_id)
        return
    missing = [item for item in items if item_record(step, item) not in done] or items[-1:]
    for item in missing:
        send_step(broker, job_type, step, job_id, item=item)


def make_enqueuer(broker: dramatiq.Broker, jobs: JobStore) -> Enqueue:
    """Return ``enqueue(job_id, new_job_type=None)``, which sends the job's next step to its queue.

    ``new_job_type`` is for a job just created: its first step is that type's first, so nothing is read."""

    def enqueue(job_id: str, new_job_type: str | None = None) -> None:
        if new_job_type is not None:
            send_step(broker, new_job_type, STEPS[new_job_type][0], job_id)
            return
        job = jobs.get_with_steps(job_id)
        # All steps recorded but the job not ended (a crash right after the last step): run the last one
        # again; steps are idempotent and the last one ends the job.
        step = next_step(job.type, job.steps) or STEPS[job.type][-1]
        send_next(broker, job.type, step, job_id, job.steps)

    return enqueue
