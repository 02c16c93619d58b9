"""The Dramatiq actors: one per step of each chain, all running :func:`workers.frame.run_step`.

Declaring them has no side effect on import: :func:`declare_actors` puts them on the broker it is given --
the worker process's Redis broker (:mod:`workers.process`) or a test's ``StubBroker``.
"""

from __future__ import annotations

from collections.abc import Callable

import dramatiq

from shared.pipeline.chains import queue_for
from workers import backup, backup_set, restore
from workers.context import Context
from workers.errors import is_transient
from workers.frame import MAX_BACKOFF_MS, MAX_RETRIES, MIN_BACKOFF_MS, Gate, ItemStep, Step, run_step

#: Dramatiq's TimeLimit defaults to 10 minutes; snapshot steps of big collections take hours.
TIME_LIMIT_MS = 7 * 24 * 3600 * 1000

STEP_FUNCTIONS: dict[str, dict[str, Step]] = {
    "backup": {"create": backup.create, "transfer": backup.transfer, "finalize": backup.finalize},
    "restore": {"prepare": restore.prepare, "recover": restore.recover, "verify": restore.verify},
}
#: Steps that fan out (one message per item): a backup set streams each shard as its own message.
ITEM_FUNCTIONS: dict[str, dict[str, ItemStep]] = {
    "backup": {"transfer": backup_set.stream_shard},
}
#: Asked before a pending job starts (see workers.frame.Gate).
GATES: dict[str, Gate] = {"backup": backup_set.wait_reason}


def _retry_when(retries: int, exc: BaseException) -> bool:
    """The frame raises ``dramatiq.Retry`` for the transient failures it judged (workers.errors)."""
    return (isinstance(exc, dramatiq.Retry) or is_transient(exc)) and retries < MAX_RETRIES


def declare_actors(broker: dramatiq.Broker, context: Callable[[], Context]) -> dict[str, dramatiq.Actor]:
    """Declare every step's actor on ``broker``; ``context`` gives the process's :class:`Context` (called per
    message, so it may build it on first use). Returns the actors by name (``backup_create``, ...)."""
    actors = {}
    for family, steps in STEP_FUNCTIONS.items():
        for step in steps:
            actors[f"{family}_{step}"] = _declare(broker, context, family, step)
    return actors


def _declare(broker: dramatiq.Broker, context: Callable[[], Context], family: str, step: str) -> dramatiq.Actor:
    steps, item_steps, gate = STEP_FUNCTIONS[family], ITEM_FUNCTIONS.get(family), GATES.get(family)

    def fn(job_id: str, item: int | None = None) -> None:
        run_step(context(), broker, steps, step, job_id, item, item_steps=item_steps, gate=gate)

    fn.__name__ = f"{family}_{step}"
    return dramatiq.actor(
        fn,
        broker=broker,
        actor_name=f"{family}_{step}",
        queue_name=queue_for(family),
        retry_when=_retry_when,
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
        time_limit=TIME_LIMIT_MS,
    )
