"""A job as QBM passes it around: a typed, immutable record (what :class:`shared.records.job_store.JobStore`
reads and writes), its type and status as ``StrEnum``s, and the one table of allowed status changes.

``JobType`` and ``JobStatus`` members are ``str``s, so they compare equal to the contract's strings, serialise
as them and can be used as Redis key parts directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobType(StrEnum):
    BACKUP = "backup"
    RESTORE = "restore"
    SHARD_BACKUP = "shard_backup"
    SHARD_RESTORE = "shard_restore"

    @property
    def family(self) -> str:
        """``backup`` or ``restore``: which chain of steps runs the job."""
        return "backup" if self in (JobType.BACKUP, JobType.SHARD_BACKUP) else "restore"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TYPES: tuple[JobType, ...] = tuple(JobType)
JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
#: The only status changes there are; the job store's Lua is generated from this table.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.FAILED: frozenset({JobStatus.PENDING}),
    JobStatus.CANCELLED: frozenset({JobStatus.PENDING}),
    JobStatus.COMPLETED: frozenset(),
}
TERMINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)

#: The contract's Job fields, in the contract's order (:meth:`Job.to_dict`).
PUBLIC_FIELDS = ("id", "type", "status", "collection_name", "shard_id", "snapshot_name", "progress", "error",
                 "metadata", "created_at", "started_at", "completed_at")


@dataclass(frozen=True)
class Job:
    """One backup or restore job. ``storage_id`` is the backend it writes to or reads from (the contract shows
    it as ``metadata.storage_id``); ``steps`` holds what each finished worker step recorded, and is only
    filled by the reads that ask for it (``JobStore.get_with_steps``)."""

    id: str
    type: JobType
    status: JobStatus
    collection_name: str
    created_at: str
    shard_id: int | None = None
    snapshot_name: str | None = None
    progress: int = 0
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    completed_at: str | None = None
    storage_id: str | None = None
    #: Bytes moved by the current transfer and its total (None: unknown), while or after one ran.
    transfer: tuple[int, int | None] | None = None
    steps: dict[str, dict] = field(default_factory=dict, compare=False)

    @property
    def family(self) -> str:
        return self.type.family

    @property
    def schedule_id(self) -> str | None:
        """The schedule whose run made this job (``metadata.schedule_id``), None when made by hand."""
        value = self.metadata.get("schedule_id")
        return value if isinstance(value, str) else None

    @property
    def target_collection(self) -> str:
        """Where a restore writes: ``metadata.target_collection``, else the backup's own collection."""
        return self.metadata.get("target_collection") or self.collection_name

    def to_dict(self) -> dict[str, Any]:
        """The contract's Job object (``storage_id`` inside ``metadata``, as the API has always shown it, and the
        transfer's ``bytes_done`` / ``bytes_total`` there too)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in PUBLIC_FIELDS}
        out["type"], out["status"] = str(self.type), str(self.status)
        metadata = dict(self.metadata)
        if self.storage_id is not None:
            metadata = {"storage_id": self.storage_id, **metadata}
        if self.transfer is not None:
            metadata["bytes_done"], metadata["bytes_total"] = self.transfer
        out["metadata"] = metadata
        return out


class JobNotFound(LookupError):
    """No job with this id (never created, or deleted)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class TransitionError(ValueError):
    """The job's current status does not allow the requested change; nothing was modified."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        allowed = [s for s in JOB_STATUSES if s in ALLOWED.get(current, ())]  # type: ignore[call-overload]
        if allowed:
            choices = allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
            hint = f"a {current} job can only become {choices}"
        else:
            hint = f"a {current} job cannot change status"
        super().__init__(f"cannot change job {job_id} from {current} to {target}; {hint}")
        self.job_id = job_id
        self.current = current
        self.target = target
