"""Dramatiq's Redis key layout, fenced in one place.

The reaper (:mod:`scheduler.reaper`: is a job's message still queued, delayed or held by a dead worker?) and
``GET /metrics`` (queue depths) read Dramatiq's own keys, which are not part of Dramatiq's API. Every key name
they use is built here; ``tests/test_third_party_fences.py`` enqueues real messages (ready and delayed) through
QBM's broker and fails loudly if an upgrade of Dramatiq stores them elsewhere.

Layout (Dramatiq 1.x-2.x ``RedisBroker``, namespace ``{key prefix}dramatiq``): a queue is the list
``{ns}:{queue}`` of message ids and the hash ``{ns}:{queue}.msgs`` of id -> encoded message; its delay queue
is ``{queue}.DQ`` with the same two keys; an encoded message is JSON with ``options.eta`` (ms) when delayed.
"""

from __future__ import annotations

DELAY_SUFFIX = ".DQ"


def namespace(prefix: str) -> str:
    """The namespace QBM's broker uses (:func:`shared.pipeline.broker.make_broker`)."""
    return f"{prefix}dramatiq"


def queue_list(prefix: str, queue: str, *, delayed: bool = False) -> str:
    """The list of message ids waiting in ``queue`` (or in its delay queue)."""
    return f"{namespace(prefix)}:{queue}{DELAY_SUFFIX if delayed else ''}"


def messages_hash(prefix: str, queue: str, *, delayed: bool = False) -> str:
    """The hash of message id -> encoded message of ``queue`` (or of its delay queue): waiting, being
    processed, or held by a worker (also a dead one, until Dramatiq's maintenance requeues it)."""
    return f"{queue_list(prefix, queue, delayed=delayed)}.msgs"
