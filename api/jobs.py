"""Jobs: create backup/restore work, follow it, cancel it, retry it.

The API only records intent: a job is stored ``pending`` and its id handed to the workers through the
app's ``enqueue`` -- by :mod:`shared.intake.submit`, the code path the scheduler uses too. Cancelling is a status
change the worker notices between chunks (it cleans up); retrying moves a failed or cancelled job back to
``pending`` and hands it over again.
"""

from __future__ import annotations

import logging
import re

from flask import Response
from flask_smorest import abort

from api.envelope import Blueprint
from api.schemas.jobs import JobCreateSchema, JobListQuerySchema, JobPageSchema, JobSchema
from api.services import services
from shared.intake.submit import HandOverFailed, InvalidJobRequest
from shared.records.job_store import JobNotFound, TransitionError

log = logging.getLogger("qbm.api")

blp = Blueprint("jobs", __name__, description="Backup and restore jobs")

ID_PARAM = {"in": "path", "name": "id", "description": "Job ID", "schema": {"type": "string"}}
MAX_PAGE = 10**9
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


#: The error of a job a person cancelled (a retry clears it).
CANCELLED_BY_REQUEST = "cancelled by request"


def _job_id(value: str) -> str:
    """Ids we never issue cannot exist: answer 404 without building a Redis key from arbitrary text."""
    if not _ID_RE.fullmatch(value):
        raise JobNotFound(value[:80])
    return value


def _hand_over(job_id: str) -> None:
    """Give the job to the workers; if that fails it is cancelled with the reason (a retry can resubmit)."""
    try:
        services().submitter.hand_over(job_id)
    except HandOverFailed as exc:
        abort(503, message=str(exc))


@blp.route("/jobs")
@blp.arguments(JobListQuerySchema(), location="query")  # an instance: a class is instantiated per request
@blp.response(200, JobPageSchema, description="One page of jobs, newest first (bare object, no envelope)")
@blp.errors(401, 503)
def list_jobs(args: dict) -> dict:
    """Jobs, newest first, paginated

    Answered bare ({items, total, page, limit}) as the contract shows, not inside status/time/result.
    """
    # Any page past the end is empty; clamping keeps the Redis range arithmetic within int64.
    page = min(args["page"], MAX_PAGE)
    items, total = services().jobs.list(
        status=args.get("status"), type=args.get("type"), page=page, limit=args["limit"]
    )
    return {"items": [job.to_dict() for job in items], "total": total, "page": args["page"], "limit": args["limit"]}


@blp.route("/jobs", methods=["POST"])
@blp.arguments(JobCreateSchema())
@blp.response(201, JobSchema)
@blp.errors(401, 404, 409, 422, 503)
def create_job(body: dict) -> dict:
    """Create a backup, restore, shard_backup or shard_restore job

    The job is stored pending and handed to the workers. metadata.storage_id defaults to the default
    storage backend (422 when there is none, or when the given one does not exist); the chosen id is
    written into the job's metadata. What can be checked at once is: 404 for a backup of a collection Qdrant
    does not have or a restore of a backup the storage does not hold, 422 for a shard not on the node or a
    backup of the other kind, 409 for a restore into a collection that exists without metadata.replace: true
    -- with the sentence the job would have failed with. A check that cannot be made
    (Qdrant or the storage not answering) does not block the job: its metadata.unchecked says so.
    """
    try:
        return services().submitter.submit(body, validated=True).to_dict()
    except InvalidJobRequest as exc:
        abort(exc.status, message=str(exc))
    except HandOverFailed as exc:
        abort(503, message=str(exc))
    raise AssertionError("unreachable")  # abort() raises


@blp.route("/jobs/<id>", parameters=[ID_PARAM])
@blp.response(200, JobSchema)
@blp.errors(401, 404, 503)
def get_job(id: str) -> dict:  # noqa: A002 - the contract's name
    """One job"""
    return services().jobs.get(_job_id(id)).to_dict()


@blp.route("/jobs/<id>/cancel", methods=["POST"], parameters=[ID_PARAM])
@blp.response(200, JobSchema)
@blp.errors(401, 404, 409, 503)
def cancel_job(id: str) -> dict:  # noqa: A002
    """Cancel a pending or running job

    The status becomes cancelled at once; a running worker notices between chunks and cleans up.
    409 for a job that is completed, failed or already cancelled.
    """
    try:
        return services().jobs.transition(_job_id(id), "cancelled", error=CANCELLED_BY_REQUEST).to_dict()
    except TransitionError as exc:
        abort(409, message=f"job {id} is {exc.current}; only pending or running jobs can be cancelled")
        raise


@blp.route("/jobs/<id>/retry", methods=["POST"], parameters=[ID_PARAM])
@blp.response(200, JobSchema)
@blp.errors(401, 404, 409, 503)
def retry_job(id: str) -> dict | Response:  # noqa: A002
    """Retry a failed or cancelled job

    The job goes back to pending (error and completed_at cleared, progress 0) and is handed to the
    workers again. 409 for a job that is pending, running or completed.
    """
    svc = services()
    try:
        job = svc.jobs.transition(_job_id(id), "pending")
    except TransitionError as exc:
        abort(409, message=f"job {id} is {exc.current}; only failed or cancelled jobs can be retried")
        raise
    _hand_over(job.id)
    return job.to_dict()
