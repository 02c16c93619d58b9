"""A Redis lease: a lock that expires unless its holder keeps renewing it.

Used so that at most one backup runs per collection (and shard) at a time, across every worker
machine. A lease, not a plain lock, because a worker may die holding it (SIGKILL, lost machine): the
key then expires and the job's redelivered message, or another job, can take it. The holder is a job
id, so the same job re-taking its own lease after a redelivery succeeds.
"""

from __future__ import annotations

import redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """``key`` held by ``holder`` for ``ttl_ms`` unless renewed.

    Why a lease and not a lock: the holder may die without releasing (see the module docstring), so holding
    must cost a renewal every fraction of the TTL; whoever holds it renews it (the worker frame's pulse
    thread, the scheduler's poll loop). Renewing and releasing are compare-and-set scripts, so a holder whose
    lease expired and was taken by another can never extend or delete the new holder's lease.
    """
    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_ms: int = 60_000) -> None:
        self.client = client
        self.key = key
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease, or keep it if this holder already has it. False when someone else holds it."""
        if self.client.set(self.key, self.holder, nx=True, px=self.ttl_ms):
            return True
        return bool(self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def holder_now(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if value else None

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.holder])


_SLOT_TAKE = """
local now = redis.call('time')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', ms)
if redis.call('zscore', KEYS[1], ARGV[1]) or redis.call('zcard', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('zadd', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
  redis.call('pexpire', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


class Slots:
    """At most ``limit`` holders of ``key`` at a time, each slot a lease of ``ttl_ms`` (a sorted set of holders
    scored by when their slot expires, in Redis server time).

    Why: a backup set streams many shards from a few Qdrant peers; each stream costs the peer a core and its
    disk, so the workers of every machine together take at most ``limit`` streams from one peer. A holder that
    dies frees its slot when the slot expires; a live holder keeps it with :meth:`take` again (a renewal)."""

    def __init__(self, client: redis.Redis, key: str, limit: int, ttl_ms: int = 60_000) -> None:
        self.client, self.key, self.limit, self.ttl_ms = client, key, limit, ttl_ms
        self._take = client.register_script(_SLOT_TAKE)

    def take(self, holder: str) -> bool:
        """Take (or renew) a slot for ``holder``; False when all ``limit`` slots are held by others."""
        return bool(self._take(keys=[self.key], args=[holder, self.limit, self.ttl_ms]))

    def release(self, holder: str) -> None:
        self.client.zrem(self.key, holder)
