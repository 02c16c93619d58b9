"""The Dramatiq broker every worker process and every enqueuer shares.

Dramatiq's defaults are wrong for hour-long snapshot transfers (see the README's "Workers" section):
a crashed worker's messages are only requeued by "maintenance", which runs on a random
``maintenance_chance`` per million *fetches of the same queue* once the dead process's heartbeat is
older than ``heartbeat_timeout``. An idle consumer fetches about once a second, so with the defaults
(0.1 %) redelivery took more than 25 minutes, and with 2 % it still averaged ~50 s. We want well under a
minute: heartbeat timeout 15 s, maintenance on 1 fetch in 5. Maintenance is two small sorted-set range
reads while no worker is dead, so this costs next to nothing.
"""

from __future__ import annotations

import contextvars
import logging

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware

from shared.config import Config, load_config
from shared.logs import bind_log_context, setup_logging, unbind_log_context
from shared.redis_conn import from_config

HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 200_000  # per 1,000,000 fetches


def make_broker(config: Config) -> RedisBroker:
    """A broker whose keys live under the service's key prefix, with crash redelivery tuned (see above).

    Its Redis client comes from :func:`shared.redis_conn.from_config`, so with Sentinel configured the
    queues follow a failover like the job store does."""
    broker = RedisBroker(
        client=from_config(config),
        namespace=f"{config.key_prefix}dramatiq",
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    broker.add_middleware(CurrentMessage())
    return broker


def install_broker(config: Config | None = None) -> RedisBroker:
    """Set up a worker process: JSON logs, the broker from the environment's config as Dramatiq's global
    broker, and the worker-only middleware (log context; Prometheus when QBM_WORKER_METRICS_PORT is set)."""
    config = config or load_config()
    # Dramatiq points sys.stderr at its log pipe before importing us; log there, as JSON (see workers/main.py).
    setup_logging(config.log_level, config.secrets)
    broker = make_broker(config)
    broker.add_middleware(LogContext())
    if config.worker_metrics_port:
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    dramatiq.set_broker(broker)
    return broker


class LogContext(Middleware):
    """Every line logged while a step runs carries its job_id, step and collection -- also the lines of the
    storage backends and the Qdrant client, which know nothing about jobs."""

    def __init__(self) -> None:
        self._tokens: dict[str, contextvars.Token] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        job_id = message.args[0] if message.args else None
        collection = None
        if job_id:
            from workers.context import get_context

            try:
                collection = get_context().jobs.get(job_id)["collection_name"]
            except Exception:  # noqa: BLE001 - a missing job is the step's business to report, not ours
                logging.getLogger("qbm.worker").debug("no job %s for log context", job_id)
        step = message.actor_name.partition("_")[2] or message.actor_name
        self._tokens[message.message_id] = bind_log_context(job_id=job_id, step=step, collection=collection)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: object = None, exception: BaseException | None = None) -> None:
        token = self._tokens.pop(message.message_id, None)
        if token is not None:
            unbind_log_context(token)

    after_skip_message = after_process_message
