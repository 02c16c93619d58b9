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

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from shared.adapters.redis_conn import from_config
from shared.runtime.config import Config

HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 200_000  # per 1,000,000 fetches


def make_broker(config: Config, client: redis.Redis | None = None) -> RedisBroker:
    """A broker whose keys live under the service's key prefix, with crash redelivery tuned (see above).

    Its Redis client comes from :func:`shared.adapters.redis_conn.from_config`, so with Sentinel configured the
    queues follow a failover like the job store does."""
    broker = RedisBroker(
        client=from_config(config),
        namespace=f"{config.key_prefix}dramatiq",
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    broker.add_middleware(CurrentMessage())
    return broker
