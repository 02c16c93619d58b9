"""Per-job heartbeats: how the reaper tells a job whose worker is gone from one that is slow or queued.

While a worker runs a step it records "this job is alive" every few seconds, from a background thread (the
worker frame's pulse, which also renews the collection's lease) that does not care what the step is doing (a
snapshot creation may sit inside one HTTP call for hours). All heartbeats live in one sorted set,
``{prefix}jobs:heartbeat``: member the job id, score the time of the last beat in milliseconds *of the Redis
server's clock* (``TIME`` inside a script), so workers, the scheduler and their clocks on different machines
never have to agree.

When a step ends without ending the job (the next step or a retry was queued) a last beat marks the hand-off:
from then on the queued message is the job's sign of life. When the job ends, its entry is removed. The
reaper (:mod:`scheduler.reaper`) reads the set; nothing else does.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger("qbm.heartbeat")

# KEYS[1] the heartbeat set; ARGV[1] job id. Scores are the Redis server's clock in milliseconds.
_BEAT_LUA = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
return ms
"""


def heartbeat_key(prefix: str) -> str:
    return f"{prefix}jobs:heartbeat"


def beat_interval(grace_seconds: float) -> float:
    """Seconds between beats: four beats fit in the reaper's grace period (so a Redis hiccup that loses a
    beat or two never looks like a dead worker), and never more than 10 s apart."""
    return max(0.2, min(10.0, grace_seconds / 4))


def redis_now_ms(client: redis.Redis) -> int:
    """The Redis server's clock in milliseconds: the same clock the heartbeats are written with."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


class JobHeartbeat:
    """Beats for one job while one step runs (the worker frame's pulse thread calls :meth:`beat`). Redis
    errors are logged and skipped: a missed beat only matters if beats stay missing for the whole grace
    period, and then the worker really cannot reach Redis."""

    def __init__(self, client: redis.Redis, prefix: str, job_id: str) -> None:
        self.key = heartbeat_key(prefix)
        self.job_id = job_id
        self._client = client
        self._beat_script = client.register_script(_BEAT_LUA)

    def beat(self) -> bool:
        try:
            self._beat_script(keys=[self.key], args=[self.job_id])
            return True
        except redis.RedisError as exc:
            log.debug("job heartbeat not recorded: %s", exc, extra={"job_id": self.job_id})
            return False

    def finish(self, *, job_ended: bool) -> None:
        """The step is over. ``job_ended``: forget the job (it completed, failed or was cancelled); otherwise
        beat once more, marking when the job went back to the queue."""
        if not job_ended:
            self.beat()
            return
        try:
            self._client.zrem(self.key, self.job_id)
        except redis.RedisError as exc:  # the reaper forgets entries of ended jobs itself
            log.debug("job heartbeat not removed: %s", exc, extra={"job_id": self.job_id})
