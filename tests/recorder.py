"""A stand-in for the workers' hand-off that records which job ids it was given (for API-level tests)."""

from __future__ import annotations


class EnqueueRecorder(list):
    """Called like ``shared.pipeline.dispatch.make_enqueuer``'s enqueue; keeps the job ids in order."""

    def __call__(self, job_id: str, new_job_type: str | None = None) -> None:
        self.append(job_id)
