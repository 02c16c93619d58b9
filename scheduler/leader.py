"""One leader among any number of scheduler processes, by a Redis lease.

Every ``qbm scheduler`` (on any machine) polls the same lease key: whoever holds it fires schedules, the others
wait. The holder renews it on each poll; if it dies, the key expires after the lease time and the next
poll of another process takes it -- so a dead leader is replaced within lease time + one poll. A leader that
cannot reach Redis for a whole lease time steps down on its own, since by then someone else may lead.

Two leaders can still overlap for a moment (a paused process that wakes after its lease expired); the
per-tick claim in :mod:`shared.schedules.firing` is what makes a tick fire once even then.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

import redis

from shared.adapters.locks import Lease

log = logging.getLogger("qbm.scheduler")


def holder_id() -> str:
    """``host:pid:random``: names the process in logs and in the lease key, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leadership:
    """This process's side of the leader lease.

    Why a lease in Redis: schedulers run on several machines for availability, but each tick must fire once.
    Whoever holds ``{prefix}scheduler:leader`` fires; it renews the lease on every poll, and if it dies the
    lease expires after ``ttl_seconds`` and another process takes over. :meth:`confirm` is asked again right
    before a fire, so a process that stalled (GC pause, lost network) past its lease does not fire a tick the
    new leader fires too; the per-tick claims in the schedule store catch the rest.
    """

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int, holder: str | None = None) -> None:
        self.holder = holder or holder_id()
        self.ttl = float(ttl_seconds)
        self.lease = Lease(client, f"{prefix}scheduler:leader", self.holder, ttl_ms=int(ttl_seconds * 1000))
        self.leading = False
        self._confirmed_at = 0.0

    def poll(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; return whether we lead now."""
        try:
            held = self.lease.acquire()
        except redis.RedisError as exc:
            if self.leading and time.monotonic() - self._confirmed_at > self.ttl:
                log.warning("lost contact with Redis for longer than the lease (%s); stepping down", exc)
                self.leading = False
            return self.leading
        if held:
            self._confirmed_at = time.monotonic()
        if held != self.leading:
            log.info("%s scheduler leadership (%s)", "took" if held else "lost", self.holder)
        self.leading = held
        return held

    def confirm(self) -> bool:
        """Right before firing: is the lease still ours in Redis (not just in our memory)?"""
        try:
            return self.leading and self.lease.holder_now() == self.holder
        except redis.RedisError:
            return False

    def release(self) -> None:
        """Give the lease up at once (clean shutdown), so another process need not wait for it to expire."""
        try:
            self.lease.release()
        except redis.RedisError:
            pass
        self.leading = False
