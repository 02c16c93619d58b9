"""A worker process's broker: the shared one (shared/pipeline/broker.py) plus worker-only middleware.

Nothing here runs at import time; ``workers.actors`` calls :func:`install_broker` when a Dramatiq worker
process loads it (``qbm worker``), and tests can declare the actors on a ``StubBroker`` instead.
"""

from __future__ import annotations

import contextvars
import logging

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from shared.pipeline.broker import make_broker
from shared.runtime.config import Config, load_config
from shared.runtime.logs import bind_log_context, setup_logging, unbind_log_context


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
