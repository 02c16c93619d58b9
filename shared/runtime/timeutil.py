"""Timestamps in one format everywhere: ISO 8601, UTC, whole seconds, ``Z`` suffix (as the contract shows);
the records' microsecond clock; Redis replies as text."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(dt: datetime) -> str:
    """``2026-11-24T02:15:00Z``; a naive datetime is taken as UTC (Qdrant's ``creation_time`` is naive UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow_iso() -> str:
    return to_iso(utcnow())


def parse_iso(value: str) -> datetime:
    """Parse our own or Qdrant's timestamps (with ``Z``, an offset, or naive meaning UTC)."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


_clock_lock = threading.Lock()
_last_micros = 0


def now_micros() -> int:
    return time.time_ns() // 1000


def next_micros() -> int:
    """Microseconds since the epoch, strictly increasing within this process.

    Records created one after another by the same process (jobs, storage configs, schedules) then always list
    in creation order even when the clock is coarse or steps back; records from different processes created
    in the same microsecond share a score, and their indexes order those by member (the id)."""
    global _last_micros
    with _clock_lock:
        _last_micros = max(now_micros(), _last_micros + 1)
        return _last_micros


def text(value: bytes | str | None) -> str | None:
    """A Redis reply as ``str`` (clients without ``decode_responses`` answer bytes)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value
