"""Creating a job: the one code path behind POST /jobs and every scheduled or "run now" backup.

A job request is validated by the same schema as the API's body, its storage backend resolved (the default
when none is named; a named one must exist), the job stored ``pending`` and handed to the workers. Sharing
this path is what makes a scheduled backup indistinguishable from one a person asked for: same checks, same
records, same hand-off, same behaviour when the hand-off fails.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import marshmallow as ma

from shared.intake.schema import JobCreateSchema, flatten_errors
from shared.records.job_store import Job, JobNotFound, JobStore, StorageMissing, TransitionError
from shared.records.storage_configs import StorageConfigNotFound, StorageConfigStore

log = logging.getLogger("qbm.submit")


class Enqueue(Protocol):
    """Hands a stored job to the workers (``new_job_type``: it was just created, so no step is done yet and
    its first step is known without reading the job back)."""

    def __call__(self, job_id: str, new_job_type: str | None = None) -> None: ...


#: The store issues ids like ``st_1a2b3c4d5e6f``; anything else cannot exist (and is kept out of Redis keys:
#: ``storage:default`` is the store's default pointer, not a config).
_STORAGE_ID_RE = re.compile(r"^st_[A-Za-z0-9]{1,60}$")


class InvalidJobRequest(ValueError):
    """The request cannot become a job; ``field`` names the culprit (``metadata.storage_id``...). ``status`` is
    the HTTP status the API answers it with."""

    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class HandOverFailed(RuntimeError):
    """The job was stored but could not be given to the workers; it is now cancelled (a retry resubmits)."""

    def __init__(self, job_id: str, cause: Exception) -> None:
        super().__init__(f"job {job_id} was stored but could not be handed to the workers; it is cancelled "
                         "and can be retried")
        self.job_id = job_id
        self.cause = cause


def load_job_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a job request exactly as POST /jobs does; raises InvalidJobRequest naming the first field."""
    try:
        return JobCreateSchema().load(dict(body))
    except ma.ValidationError as exc:
        problems = [(".".join(path), text) for path, text in flatten_errors(exc.messages)]
        field, text = problems[0] if problems else ("", "invalid job request")
        raise InvalidJobRequest(field, text) from None


def _storage_missing(storage_id: object) -> InvalidJobRequest:
    """The refusal of a job whose backend does not exist (``storage_id``) or, with none named, has no default."""
    if storage_id is None:
        return InvalidJobRequest("metadata.storage_id", "not given and no default storage backend is configured")
    return InvalidJobRequest("metadata.storage_id", f"storage backend {str(storage_id)[:80]} does not exist")


def storage_id_format_ok(value: object) -> bool:
    return isinstance(value, str) and bool(_STORAGE_ID_RE.fullmatch(value))


@dataclass
class JobSubmitter:
    """What creating a job needs: the two stores and the hand-off to the workers."""

    jobs: JobStore
    storage_configs: StorageConfigStore
    enqueue: Enqueue
    #: Checks made before the job is stored (:class:`shared.intake.preflight.Preflight`): raises an
    #: InvalidJobRequest for a job that would certainly fail, or returns what it could not check.
    preflight: Callable[[dict[str, Any], str | None], str | None] | None = None

    def default_storage(self) -> str:
        """The default backend's id; InvalidJobRequest (naming ``metadata.storage_id``) when none is set.
        (Job creation looks the default up inside its own Redis call: ``JobStore.create``.)"""
        default_id = self.storage_configs.default_id()
        if default_id is None:
            raise _storage_missing(None)
        return default_id

    def submit(self, body: Mapping[str, Any], *, validated: bool = False) -> Job:
        """Validate (unless the caller already loaded ``body`` with the same schema), store, hand over.

        Returns the stored job. Raises InvalidJobRequest (nothing stored) or HandOverFailed (stored,
        then cancelled with the reason).
        """
        data = dict(body) if validated else load_job_request(body)
        metadata = dict(data.get("metadata") or {})
        storage_id = metadata.get("storage_id")
        if storage_id is not None and not storage_id_format_ok(storage_id):
            raise _storage_missing(storage_id)
        if self.preflight is not None:
            unchecked = self.preflight(data, self._storage_for_preflight(storage_id))
            if unchecked:
                metadata["unchecked"] = unchecked
        try:
            # The storage check (or the default's lookup) happens in the same Redis call that stores the job.
            job = self.jobs.create(
                data["type"],
                data["collection_name"],
                shard_id=data.get("shard_id"),
                snapshot_name=data.get("snapshot_name"),
                metadata=metadata,
                storage=self.storage_configs.job_ref(),
            )
        except StorageMissing as exc:
            raise _storage_missing(exc.storage_id) from None
        self.hand_over(job.id, new_job_type=job.type)
        return job

    def _storage_for_preflight(self, storage_id: str | None) -> str:
        """The backend a new job would use, refused now (as jobs.create would) when there is none, so a missing
        backend is reported before anything about the collection or backup."""
        if storage_id is None:
            return self.default_storage()
        try:
            self.storage_configs.get(storage_id)
        except StorageConfigNotFound:
            raise _storage_missing(storage_id) from None
        return storage_id

    def hand_over(self, job_id: str, *, new_job_type: str | None = None) -> None:
        """Give a stored job to the workers; if that fails, cancel it with the reason and raise HandOverFailed.

        ``new_job_type``: the job was just created (no step done), so its first step is known without a read."""
        try:
            self.enqueue(job_id, new_job_type=new_job_type)
        except Exception as exc:
            log.error("could not enqueue job %s", job_id, exc_info=True, extra={"job_id": job_id})
            try:
                self.jobs.transition(job_id, "cancelled", error=f"could not be handed to the workers: {exc}")
            except (JobNotFound, TransitionError):
                pass
            raise HandOverFailed(job_id, exc) from exc
