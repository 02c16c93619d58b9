"""A worker process's broker: the shared one (:mod:`shared.pipeline.broker`) plus worker-only middleware.

Nothing here runs at import time: :mod:`workers.process`, the module ``qbm worker`` hands to Dramatiq, calls
:func:`install_broker`; tests declare the actors on a ``StubBroker`` instead.
"""

from __future__ import annotations

import contextvars

import dramatiq
from dramatiq.middleware import Middleware

from shared.runtime.logs import bind_log_context, setup_logging, unbind_log_context
from shared.services import Services


def install_broker(services: Services) -> dramatiq.Broker:
    """Set up a worker process: JSON logs, the process's broker (``services.broker``, on its one Redis client)
    as Dramatiq's global broker, and the worker-only middleware (log context; Prometheus when
    QBM_WORKER_METRICS_PORT is set)."""
    config = services.config
    # Dramatiq points sys.stderr at its log pipe before importing us; log there, as JSON (see workers/main.py).
    setup_logging(config.log_level, config.secrets)
    broker = services.broker
    broker.add_middleware(LogContext())
    if config.worker_metrics_port:
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    dramatiq.set_broker(broker)
    return broker


class LogContext(Middleware):
    """Every line logged while a step runs carries its job_id and step -- also the lines of the storage
    backends and the Qdrant client, which know nothing about jobs. (The frame adds the collection once it
    has read the job: :func:`workers.frame.run_step`.)"""

    def __init__(self) -> None:
        self._tokens: dict[str, contextvars.Token] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        job_id = message.args[0] if message.args else None
        step = message.actor_name.partition("_")[2] or message.actor_name
        self._tokens[message.message_id] = bind_log_context(job_id=job_id, step=step)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: object = None, exception: BaseException | None = None) -> None:
        token = self._tokens.pop(message.message_id, None)
        if token is not None:
            unbind_log_context(token)

    after_skip_message = after_process_message
