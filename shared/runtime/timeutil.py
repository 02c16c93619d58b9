"""Timestamps in one format everywhere: ISO 8601, UTC, whole seconds, ``Z`` suffix (as the contract shows)."""

from __future__ import annotations

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
