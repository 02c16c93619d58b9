"""Metrics that workers produce, kept in Redis so that the API's GET /metrics can show them.

Workers are separate processes, often on other machines: a Prometheus client registry inside one of them
would only be seen by scraping that one process. So workers add to counters in one Redis hash
(``HINCRBY``), and the API renders the hash at scrape time (api/metrics.py). Writes are batched -- a
transfer reports its bytes at most once a second and when it ends, never per chunk -- and never fail the
job: metrics are worth losing before a backup is.

Hash fields are ``name|label=value|label=value`` (label values are QBM's own words: job types, statuses,
backend kinds, directions), so one HGETALL returns everything and the renderer needs no key scan.

This module must not import ``prometheus_client``: Dramatiq's Prometheus middleware has to be the first to
import it in a worker process (it switches the library to multi-process mode at import time).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import redis

from shared.runtime.metrics_keys import active_transfers, metrics_hash
from shared.runtime.timeutil import parse_iso

if TYPE_CHECKING:
    from shared.records.job import Job

log = logging.getLogger("qbm.metrics")

#: Job duration buckets in seconds: from a small collection's seconds up to a day-long snapshot transfer.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: At most this often (seconds) does a transfer write its byte count and heartbeat to Redis.
FLUSH_INTERVAL = 1.0
#: A transfer whose heartbeat is older than this (ms) is no longer counted as active: its worker died, or
#: the stream has sent nothing for that long.
ACTIVE_STALE_MS = 60_000

BYTES = "bytes_transferred_total"
DURATION_BUCKET = "job_duration_seconds_bucket"
DURATION_SUM = "job_duration_seconds_sum"
DURATION_COUNT = "job_duration_seconds_count"


def field(name: str, **labels: str) -> str:
    """The hash field for ``name`` with ``labels`` (in a fixed order, so one series is one field)."""
    return "|".join([name, *(f"{key}={labels[key]}" for key in sorted(labels))])


def parse_field(raw: str) -> tuple[str, dict[str, str]]:
    name, *pairs = raw.split("|")
    return name, dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def _bucket_label(seconds: float) -> str:
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return str(float(bound))
    return "+Inf"


def record_job_end(client: redis.Redis, prefix: str, job: Job) -> None:
    """Add an ended job's run time (started_at to completed_at) to the duration histogram.

    Jobs that never started (cancelled while pending) have no run time and are not counted."""
    if not job.started_at or not job.completed_at:
        return
    try:
        seconds = max(0.0, (parse_iso(job.completed_at) - parse_iso(job.started_at)).total_seconds())
        labels = {"type": str(job.type), "status": str(job.status)}
        pipe = client.pipeline(transaction=False)
        key = metrics_hash(prefix)
        pipe.hincrby(key, field(DURATION_BUCKET, le=_bucket_label(seconds), **labels), 1)
        pipe.hincrbyfloat(key, field(DURATION_SUM, **labels), seconds)
        pipe.hincrby(key, field(DURATION_COUNT, **labels), 1)
        pipe.execute()
    except (redis.RedisError, KeyError, ValueError) as exc:
        log.warning("could not record the job's duration metric: %s", exc)


class TransferMeter:
    """Counts the bytes one step moves; reports them, and that the transfer is alive, at most once a second.

    Use as a context manager around the transfer and pass :meth:`tracking` of the step's progress callback
    (which receives the running byte total) to the storage call.
    """

    def __init__(self, client: redis.Redis, prefix: str, *, direction: str, backend: str, job_id: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.prefix, self.clock = client, prefix, clock
        self.labels = {"direction": direction, "backend": backend}
        self.member = f"{direction}|{backend}|{job_id}|{uuid.uuid4().hex[:8]}"
        self.total = 0
        self._reported = 0
        self._last = 0.0

    def __enter__(self) -> TransferMeter:
        self._write(active=True)
        self._last = self.clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._write(active=False)

    def tracking(self, progress: Callable[[int], None] | None = None) -> Callable[[int], None]:
        """A progress callback that feeds this meter, then ``progress``."""

        def callback(done: int) -> None:
            self.update(done)
            if progress is not None:
                progress(done)

        return callback

    def update(self, done: int) -> None:
        """The transfer has moved ``done`` bytes so far."""
        self.total = max(self.total, done)
        now = self.clock()
        if now - self._last >= FLUSH_INTERVAL:
            self._last = now
            self._write(active=True)

    def _write(self, *, active: bool) -> None:
        delta, self._reported = self.total - self._reported, self.total
        try:
            pipe = self.client.pipeline(transaction=False)
            if delta:
                pipe.hincrby(metrics_hash(self.prefix), field(BYTES, **self.labels), delta)
            if active:
                pipe.zadd(active_transfers(self.prefix), {self.member: int(time.time() * 1000)})
            else:
                pipe.zrem(active_transfers(self.prefix), self.member)
            pipe.execute()
        except redis.RedisError as exc:
            self._reported -= delta  # try again with the next write
            log.warning("could not update transfer metrics: %s", exc)
