"""Schedules: recurring backups (cron or interval, in a time zone) with retention.

The API only stores definitions (:mod:`shared.schedules.store`); the leader among the ``qbm scheduler`` processes
notices a change within about a second and fires from then on. ``next_run_time`` is computed here from the
same trigger the scheduler uses; ``last_run.status`` is derived from the run's jobs at read time, so it says
whether last night's backups actually completed, not merely that they were started.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask_smorest import abort

from api.envelope import Blueprint, BoolResult
from api.schemas.schedules import LastRunSchema, ScheduleCreateSchema, ScheduleSchema, ScheduleUpdateSchema
from api.services import services
from shared.intake.submit import storage_id_format_ok
from shared.records.job_store import JobNotFound, JobStore
from shared.records.storage_configs import StorageConfigNotFound
from shared.schedules.firing import Firing
from shared.schedules.store import ScheduleNotFound, next_run_time, validate_schedule
from shared.schedules.triggers import InvalidSchedule

blp = Blueprint("schedules", __name__, description="Recurring backups and their retention")

ID_PARAM = {"in": "path", "name": "id", "description": "Schedule ID", "schema": {"type": "string"}}
_ID_RE = re.compile(r"^sc_[A-Za-z0-9]{1,60}$")


def _get(schedule_id: str) -> dict[str, Any]:
    try:
        if not _ID_RE.fullmatch(schedule_id):
            raise ScheduleNotFound(schedule_id[:80])
        return services().schedules.get(schedule_id)
    except ScheduleNotFound:
        abort(404, message=f"schedule {schedule_id[:80]} not found")
        raise


def run_status(record: dict[str, Any], jobs: JobStore) -> str:
    """What a run amounts to now: running, completed, failed or skipped (see LastRunSchema)."""
    if record.get("status") == "skipped":
        return "skipped"
    statuses = []
    for job_id in record.get("job_ids") or []:
        try:
            statuses.append(jobs.get(job_id).status)
        except JobNotFound:
            continue  # deleted since; it no longer tells us anything
    if any(s in ("pending", "running") for s in statuses):
        return "running"
    if record.get("error") or any(s in ("failed", "cancelled") for s in statuses):
        return "failed"
    return "completed"


def present_run(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {**record, "status": run_status(record, services().jobs)}


def present(schedule: dict[str, Any]) -> dict[str, Any]:
    try:
        upcoming = next_run_time(schedule)
    except InvalidSchedule:  # stored under rules (or time zone data) that no longer accept it: it cannot run
        upcoming = None
    return {**schedule, "next_run_time": upcoming, "last_run": present_run(schedule.get("last_run"))}


def _validated(data: dict[str, Any]) -> dict[str, Any]:
    """The whole definition checked (422 naming the field), including that its storage backend exists."""
    try:
        definition = validate_schedule(data)
    except InvalidSchedule as exc:
        abort(422, message=str(exc))
        raise
    storage_id = definition.get("storage_id")
    if storage_id is not None:
        try:
            if not storage_id_format_ok(storage_id):
                raise StorageConfigNotFound(storage_id[:80])
            services().storage_configs.get(storage_id)
        except StorageConfigNotFound:
            abort(422, message=f"storage_id: storage backend {storage_id[:80]} does not exist")
    return definition


@blp.route("/schedules")
@blp.response(200, ScheduleSchema(many=True))
@blp.errors(401, 503)
def list_schedules() -> list[dict]:
    """All schedules, oldest first"""
    return [present(s) for s in services().schedules.list()]


@blp.route("/schedules", methods=["POST"])
@blp.arguments(ScheduleCreateSchema)
@blp.response(201, ScheduleSchema)
@blp.errors(401, 422, 503)
def create_schedule(body: dict) -> dict:
    """Create a schedule

    Exactly one of cron (5 fields, cron(8) meaning, in timezone) and interval_seconds (at least 10).
    422 names the field for a bad cron expression, an unknown time zone, an unknown storage backend or
    keep_last below 1. The running scheduler picks it up within seconds.
    """
    return present(services().schedules.create(_validated(body)))


@blp.route("/schedules/<id>", parameters=[ID_PARAM])
@blp.response(200, ScheduleSchema)
@blp.errors(401, 404, 503)
def get_schedule(id: str) -> dict:  # noqa: A002 - the contract's name
    """One schedule, with its next run time and last run"""
    return present(_get(id))


@blp.route("/schedules/<id>", methods=["PUT"], parameters=[ID_PARAM])
@blp.arguments(ScheduleUpdateSchema)
@blp.response(200, ScheduleSchema)
@blp.errors(401, 404, 422, 503)
def update_schedule(body: dict, id: str) -> dict:  # noqa: A002
    """Update a schedule (partial)

    Only the fields given change, and the result is validated like a new schedule. Giving cron clears
    interval_seconds and the other way round. Changing the timing (or enabling the schedule again) starts
    it afresh: runs missed under the old timing are not caught up.
    """
    current = _get(id)
    changes = dict(body)
    if changes.get("cron") is not None and "interval_seconds" not in changes:
        changes["interval_seconds"] = None
    if changes.get("interval_seconds") is not None and "cron" not in changes:
        changes["cron"] = None
    definition = _validated({**current, **changes})
    try:
        return present(services().schedules.update(id, {k: definition[k] for k in changes}))
    except ScheduleNotFound:
        abort(404, message=f"schedule {id} not found")
        raise


@blp.route("/schedules/<id>", methods=["DELETE"], parameters=[ID_PARAM])
@blp.response(200, BoolResult)
@blp.errors(401, 404, 503)
def delete_schedule(id: str) -> bool:  # noqa: A002
    """Delete a schedule

    Its jobs and backups stay; its retention no longer applies to them.
    """
    _get(id)
    try:
        services().schedules.delete(id)
    except ScheduleNotFound:
        abort(404, message=f"schedule {id} not found")
    return True


@blp.route("/schedules/<id>/run", methods=["POST"], parameters=[ID_PARAM])
@blp.response(200, LastRunSchema)
@blp.errors(401, 404, 503)
def run_schedule(id: str) -> dict:  # noqa: A002
    """Run a schedule now

    Creates the schedule's jobs at once (also for a disabled schedule), exactly as a scheduled run would,
    and answers the run (which becomes the schedule's last_run). Problems creating a job (an unknown
    collection for a shard schedule, a deleted storage backend, Qdrant unreachable for ["*"]) are in the
    answer's error, with status failed. A run by hand does not count as a scheduled tick.
    """
    schedule = _get(id)
    svc = services()
    firing = Firing(schedules=svc.schedules, submitter=svc.submitter, qdrant=svc.qdrant,
                    grace=timedelta(seconds=svc.config.misfire_grace_seconds))
    return present_run(firing.run(schedule)) or {}
