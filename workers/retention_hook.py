"""After a scheduled backup: apply its schedule's retention to that collection's backups in that storage.

Runs in the worker right after the backup's manifest is written and before the job is marked completed, so
"completed" means the new backup exists *and* old ones are pruned (their ids are recorded in
``metadata.retention_deleted``). Only backups this schedule made are considered, pinned ones never deleted.
Retention is housekeeping: any failure is logged and never fails the backup, and the next scheduled backup
tries again. The rules themselves are in :mod:`shared.domain.retention`.
"""

from __future__ import annotations

import logging

from shared.domain.retention import Policy, protected_names, prune
from shared.records.job import Job
from shared.runtime.timeutil import utcnow
from shared.schedules.store import ScheduleNotFound
from workers.context import Context

log = logging.getLogger("qbm.worker.retention")


def apply_schedule_retention(ctx: Context, job: Job) -> None:
    schedule_id = job.metadata.get("schedule_id")
    if not schedule_id or job.family != "backup":
        return
    extra = {"job_id": job.id, "collection": job.collection_name, "schedule_id": schedule_id}
    try:
        try:
            schedule = ctx.schedules.get(schedule_id)
        except ScheduleNotFound:
            return  # deleted since: its retention no longer applies
        policy = Policy.from_dict(schedule.get("retention"))
        if policy is None:
            return
        _, storage = ctx.storage_for(job)
        outcome = prune(storage, job.collection_name, policy, now=utcnow(), protected=protected_names(ctx.jobs),
                        shard_id=job.shard_id, schedule_id=schedule_id)
        if outcome.deleted:
            deleted = [m.backup_id for m in outcome.deleted]
            ctx.jobs.merge_metadata(job.id, {"retention_deleted": deleted})
            log.info("retention deleted %d backup(s): %s", len(deleted), ", ".join(deleted), extra=extra)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never fail the backup
        log.warning("retention after backup failed (the next scheduled backup retries): %s", exc, extra=extra)
