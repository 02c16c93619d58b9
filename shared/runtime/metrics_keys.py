"""Redis key names behind GET /metrics, shared by the processes that write them and the API that reads them.

Workers, the scheduler and the API run as separate processes (often on separate machines), so whatever the
API exposes at scrape time must be in Redis. Keeping the names in this dependency-free module lets every
writer use them without importing the metrics renderer, and makes the layout findable in one place.
"""

from __future__ import annotations


def metrics_hash(prefix: str) -> str:
    """Counters and histogram buckets written by workers (HINCRBY / HINCRBYFLOAT); fields are
    ``name|label=value|label=value`` (see :mod:`shared.runtime.metrics`)."""
    return f"{prefix}metrics"


def active_transfers(prefix: str) -> str:
    """Sorted set: one member per transfer in progress, scored by its last heartbeat (unix ms), so a worker that
    died mid-transfer stops being counted once its heartbeat is stale instead of leaving a gauge stuck."""
    return f"{prefix}metrics:active"


def scheduler_leader(prefix: str) -> str:
    """The scheduler leader lease: a string holding the leader's id, with a TTL that the leader keeps renewing.
    Absent = no scheduler is leading (nothing fires)."""
    return f"{prefix}scheduler:leader"


def scheduler_last_fire(prefix: str) -> str:
    """Unix time in seconds (a decimal string) at which the scheduler last fired a schedule."""
    return f"{prefix}scheduler:last_fire"
