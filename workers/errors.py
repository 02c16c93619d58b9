"""How a step's failure is judged: retry it (transient) or fail the job at once (permanent).

Connection errors, Qdrant 5xx/408/429, a download cut mid-stream, S3/IO errors and Redis hiccups are
transient: Dramatiq's Retries middleware runs the step again with backoff. A missing collection or backup, a
deleted S3 bucket, refused credentials or a wrong S3 region, a checksum mismatch, or any other 4xx answer will
not get better by waiting, so the job fails straight away with a sentence a person can act on.
"""

from __future__ import annotations

import redis

from shared.adapters.qdrant import QdrantError
from shared.adapters.storage.base import (
    BucketNotFound,
    InvalidKey,
    ObjectNotFound,
    PermissionDenied,
    StorageError,
    WrongRegion,
)
from shared.domain.manifest import ManifestError


class PermanentError(Exception):
    """Fail the job now; the message is shown to the user as the job's ``error``."""


class TryLater(Exception):
    """Not now, and not a failure: the step's message comes back after ``delay_ms`` (every peer that could serve
    it is busy with as many streams as it may serve)."""

    def __init__(self, reason: str, delay_ms: int = 2_000) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


class JobCancelled(Exception):
    """The user cancelled the job while a step was running."""


def is_transient(exc: BaseException) -> bool:
    """The one place that decides whether a step's failure is retried (Qdrant's own answers are judged by
    :attr:`shared.adapters.qdrant.QdrantError.transient`)."""
    # A missing bucket, refused credentials or a wrong region will not fix themselves between retries: say so
    # at once.
    if isinstance(exc, PermanentError | ManifestError | InvalidKey | ObjectNotFound | BucketNotFound
                  | PermissionDenied | WrongRegion):
        return False
    if isinstance(exc, QdrantError):
        return exc.transient
    if isinstance(exc, StorageError | redis.RedisError | OSError | ConnectionError | TimeoutError):
        return True
    return False


def is_expected(exc: BaseException) -> bool:
    """A failure QBM knows how to explain (a Qdrant or storage answer, a bad manifest, a refusal of ours): logged
    as one line, without a traceback. Anything else is a bug and gets its traceback."""
    return isinstance(exc, PermanentError | QdrantError | ManifestError | StorageError)


def describe(exc: BaseException) -> str:
    """A one-line reason for the job's ``error`` field (never a traceback, never a secret)."""
    if isinstance(exc, QdrantError) and exc.status == 401:
        return (f"Qdrant refused QBM's API key (HTTP 401: {exc.message}); check QBM_QDRANT_API_KEY")
    if isinstance(exc, QdrantError) and exc.status == 403:
        return (f"Qdrant does not allow this with QBM's API key (HTTP 403: {exc.message}); QBM_QDRANT_API_KEY "
                "needs full access (a read-only key can list collections but not take or restore snapshots)")
    if isinstance(exc, QdrantError):
        where = f" (HTTP {exc.status})" if exc.status else ""
        return f"Qdrant: {exc.message}{where}"
    if isinstance(exc, PermanentError | ManifestError | StorageError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
