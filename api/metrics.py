"""GET /metrics: Prometheus text format, built from Redis at scrape time.

Everything QBM knows about its work lives in Redis -- jobs in the job store, worker-side counters in the
metrics hash (shared/runtime/metrics.py), queues in Dramatiq's keys, the scheduler's lease -- so any API replica
answers for the whole deployment, however many workers run on however many machines. A scrape costs a
handful of cheap commands (ZCARDs, LLENs, one HGETALL of a small hash, one GET or two), never a key scan.

Like the probes, /metrics needs no API key: Prometheus scrapes without one by default, and the series carry
counts only -- no collection names, no paths, nothing from a job's request.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

import redis
from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.envelope import Blueprint
from api.services import services
from shared.pipeline import dramatiq_keys
from shared.pipeline.chains import STEPS, queue_for
from shared.runtime import metrics as m
from shared.runtime.metrics_keys import active_transfers, metrics_hash, scheduler_last_fire, scheduler_leader
from shared.services import Services

blp = Blueprint("metrics", __name__, description="Prometheus metrics (no API key needed)")

QUEUES = tuple(sorted({queue_for(job_type) for job_type in STEPS}))


class RedisCollector:
    """A prometheus_client collector that reads the deployment's state from Redis on every collect()."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        prefix = self.svc.config.key_prefix
        client = self.svc.redis
        yield self._jobs()
        stored = {k.decode(): v.decode() for k, v in client.hgetall(metrics_hash(prefix)).items()}
        yield from self._from_hash(stored)
        yield self._active(client, prefix)
        yield from self._queues(client, prefix)
        yield from self._scheduler(client, prefix)

    def _jobs(self) -> Metric:
        family = GaugeMetricFamily("qbm_jobs", "Jobs in the job store, by type and status.",
                                   labels=["type", "status"])
        for (job_type, status), count in sorted(self.svc.jobs.counts().items()):
            family.add_metric([job_type, status], count)
        return family

    def _from_hash(self, stored: dict[str, str]) -> Iterator[Metric]:
        transferred = CounterMetricFamily(
            "qbm_bytes_transferred", "Bytes workers moved between Qdrant and storage, by direction "
            "(backup: Qdrant to storage; restore: storage to Qdrant) and storage backend.",
            labels=["direction", "backend"])
        buckets: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        sums: dict[tuple[str, str], float] = {}
        for raw, value in sorted(stored.items()):
            name, labels = m.parse_field(raw)
            if name == m.BYTES:
                transferred.add_metric([labels.get("direction", ""), labels.get("backend", "")], float(value))
            elif name in (m.DURATION_BUCKET, m.DURATION_SUM):
                series = (labels.get("type", ""), labels.get("status", ""))
                if name == m.DURATION_SUM:
                    sums[series] = float(value)
                else:
                    buckets[series][labels.get("le", "+Inf")] = float(value)
        yield transferred

        durations = HistogramMetricFamily(
            "qbm_job_duration_seconds", "Run time of ended jobs (started to completed, failed or cancelled).",
            labels=["type", "status"])
        bounds = [str(float(b)) for b in m.DURATION_BUCKETS] + ["+Inf"]
        for series in sorted(set(buckets) | set(sums)):
            running, cumulative = 0.0, []
            for bound in bounds:  # stored per bucket; Prometheus wants cumulative counts
                running += buckets[series].get(bound, 0.0)
                cumulative.append((bound, running))
            durations.add_metric(list(series), cumulative, sum_value=sums.get(series, 0.0))
        yield durations

    def _active(self, client: redis.Redis, prefix: str) -> Metric:
        key = active_transfers(prefix)
        fresh_after = int(time.time() * 1000) - m.ACTIVE_STALE_MS
        client.zremrangebyscore(key, "-inf", f"({fresh_after}")  # transfers of dead workers
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for member in client.zrange(key, 0, -1):
            direction, backend, *_ = member.decode().split("|")
            counts[(direction, backend)] += 1
        family = GaugeMetricFamily("qbm_active_transfers", "Snapshot transfers in progress right now.",
                                   labels=["direction", "backend"])
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        return family

    def _queues(self, client: redis.Redis, prefix: str) -> Iterator[Metric]:
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(dramatiq_keys.queue_list(prefix, queue))
            pipe.llen(dramatiq_keys.queue_list(prefix, queue, delayed=True))
        lengths = pipe.execute()
        depth = GaugeMetricFamily("qbm_queue_depth", "Step messages waiting for a worker, by queue.",
                                  labels=["queue"])
        delayed = GaugeMetricFamily(
            "qbm_queue_delayed", "Step messages waiting for their time (retry backoff, busy collection).",
            labels=["queue"])
        for index, queue in enumerate(QUEUES):
            depth.add_metric([queue], lengths[2 * index])
            delayed.add_metric([queue], lengths[2 * index + 1])
        yield depth
        yield delayed

    def _scheduler(self, client: redis.Redis, prefix: str) -> Iterator[Metric]:
        holder, last_fire = client.mget([scheduler_leader(prefix), scheduler_last_fire(prefix)])
        leader = GaugeMetricFamily("qbm_scheduler_leader",
                                   "1 while a scheduler holds the leader lease (schedules fire), else 0.")
        leader.add_metric([], 1 if holder else 0)
        yield leader
        if last_fire:
            fired = GaugeMetricFamily("qbm_scheduler_last_fire_timestamp_seconds",
                                      "Unix time at which the scheduler last fired a schedule.")
            fired.add_metric([], float(last_fire))
            yield fired


def render(svc: Services) -> bytes:
    """The exposition text for the deployment ``svc`` sees."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(svc))
    return generate_latest(registry)


@blp.route("/metrics")
@blp.doc(security=[], responses={"200": {
    "description": "Prometheus text exposition format",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}})
def metrics() -> Response:
    """Prometheus metrics

    Jobs by type and status, job durations, bytes transferred, active transfers, queue depths and the
    scheduler's leadership, for the whole deployment (read from Redis at scrape time). Dramatiq's own
    per-process worker metrics are served by each worker on QBM_WORKER_METRICS_PORT.
    """
    return Response(render(services()), mimetype=None, content_type=CONTENT_TYPE_LATEST)
