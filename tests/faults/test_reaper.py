"""The reaper's decisions, against the real Redis and real Dramatiq messages (the reaper runs in-process here;
``test_redis_restart.py`` runs it inside a real ``qbm scheduler``).

A job is re-enqueued only when it has been silent (no worker heartbeat) for the grace period *and* no message
could still deliver it; a job whose message waits in a queue is never touched, however long it waits, because
a second message would run the same step twice. Losing a message is simulated the way it happens: nothing is
enqueued (a retry that could not be handed to Redis), or a Dramatiq consumer takes a delayed message and never
gives it back (what a worker does with its in-memory delay queue when its Redis connection drops).
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from scheduler.reaper import Reaped, Reaper
from shared.adapters.heartbeat import JobHeartbeat, heartbeat_key, redis_now_ms
from shared.adapters.locks import Lease
from shared.pipeline.broker import make_broker
from shared.pipeline.dispatch import send_step
from shared.records.job_store import JobStore
from shared.runtime.config import Config
from shared.services import Services
from tests.engine.conftest import wait_until
from workers.frame import StepPulse

GRACE = 2


@pytest.fixture
def reaper(engine_config: Config, redis_client: redis.Redis) -> Reaper:
    return Reaper(redis_client, engine_config.key_prefix, Services(engine_config).enqueue, GRACE, max_requeues=2)


def running_backup(jobs: JobStore, *steps: str) -> str:
    job = jobs.create("backup", "docs", metadata={"storage_id": "st_test"})
    jobs.transition(job.id, "running")
    for step in steps:
        jobs.record_step(job.id, step, {})
    return job.id


def beat_long_ago(client: redis.Redis, prefix: str, job_id: str, seconds: float = 60) -> None:
    """The worker's last heartbeat for this job was ``seconds`` ago (by the Redis clock, as workers write it)."""
    client.zadd(heartbeat_key(prefix), {job_id: redis_now_ms(client) - int(seconds * 1000)})


def messages(client: redis.Redis, prefix: str, queue: str) -> list[dict]:
    return [json.loads(v) for v in client.hvals(f"{prefix}dramatiq:{queue}.msgs")]


def lose_messages(client: redis.Redis, prefix: str) -> None:
    client.delete(*(f"{prefix}dramatiq:{k}" for k in ("backups", "backups.msgs", "backups.DQ", "backups.DQ.msgs")))


def test_silent_job_without_a_message_is_requeued_then_failed(reaper, jobs, redis_client, engine_config):  # noqa: ANN001
    prefix = engine_config.key_prefix
    job_id = running_backup(jobs, "create_started", "create")
    beat_long_ago(redis_client, prefix, job_id)

    for _ in range(2):
        assert [(r.job_id, r.action) for r in reaper.run_once()] == [(job_id, "requeued")]
        # Sent again from its first unfinished step, through the API's enqueuer.
        sent = messages(redis_client, prefix, "backups")
        assert [(m["actor_name"], m["args"]) for m in sent] == [("backup_transfer", [job_id])]
        assert reaper.run_once() == []  # the new message is its sign of life now
        assert jobs.get(job_id).status == "running"
        lose_messages(redis_client, prefix)
        beat_long_ago(redis_client, prefix, job_id)

    [reaped] = reaper.run_once()
    assert reaped == Reaped(job_id, "failed", "running", reaped.silent_seconds) and reaped.silent_seconds >= 60
    failed = jobs.get(job_id)
    assert failed.status == "failed"
    assert failed.error.startswith("the worker running this job stopped responding")
    assert "re-enqueueing it 2 times did not help; retry the job" in failed.error
    assert messages(redis_client, prefix, "backups") == []
    assert redis_client.zscore(heartbeat_key(prefix), job_id) is None


def test_job_whose_message_waits_in_the_queue_is_left_alone(reaper, jobs, redis_client, engine_config):  # noqa: ANN001
    prefix = engine_config.key_prefix
    broker = make_broker(engine_config)
    waiting = running_backup(jobs, "create_started", "create")
    send_step(broker, "backup", "transfer", waiting)  # behind a long queue of other backups, say
    delayed = running_backup(jobs, "create_started", "create")
    send_step(broker, "backup", "transfer", delayed, delay_ms=3_600_000)  # a retry's backoff, say
    for job_id in (waiting, delayed):
        beat_long_ago(redis_client, prefix, job_id, seconds=3600)

    assert reaper.run_once() == []
    assert [jobs.get(j).status for j in (waiting, delayed)] == ["running", "running"]
    assert len(messages(redis_client, prefix, "backups")) == 1
    assert len(messages(redis_client, prefix, "backups.DQ")) == 1


def test_job_is_left_alone_while_its_worker_beats_and_reaped_after_it_stops(reaper, jobs, redis_client,  # noqa: ANN001
                                                                            engine_config):
    prefix = engine_config.key_prefix
    job_id = running_backup(jobs, "create_started", "create")
    heartbeat = JobHeartbeat(redis_client, prefix, job_id)
    began = time.monotonic()

    def beating_past_the_grace_period() -> bool:
        assert reaper.run_once() == [], "a job whose worker beats was reaped"
        return time.monotonic() - began > GRACE + 1

    # The worker frame's own pulse thread (lease renewal and heartbeat), as it runs around a long step.
    with StepPulse(Lease(redis_client, f"{prefix}lock:c:docs", job_id), heartbeat, interval=0.2):
        wait_until(beating_past_the_grace_period, timeout=GRACE + 5, what="more than the grace period of beats")
    heartbeat.finish(job_ended=False)  # the step ended and handed the job on -- but that message got lost
    stopped = time.monotonic()
    acted: list[Reaped] = []
    wait_until(lambda: bool(acted.extend(reaper.run_once()) or acted), timeout=GRACE + 5,
               what="the reaper to act on the silent job")
    assert time.monotonic() - stopped >= GRACE - 0.5
    assert [(r.job_id, r.action) for r in acted] == [(job_id, "requeued")]
    assert jobs.get(job_id).status == "running"


def test_delayed_message_a_worker_forgot_is_replaced(reaper, jobs, redis_client, engine_config):  # noqa: ANN001
    prefix = engine_config.key_prefix
    broker = make_broker(engine_config)
    job_id = running_backup(jobs, "create_started", "create")
    send_step(broker, "backup", "transfer", job_id, delay_ms=1)
    beat_long_ago(redis_client, prefix, job_id)
    # A worker's consumer takes the delayed message off the delay queue (it would hold it in memory until its
    # ETA) and then forgets it, as Dramatiq does when its connection drops: it stays assigned to that worker.
    consumer = broker.consume("backups.DQ", prefetch=1, timeout=100)
    taken = next(consumer)
    assert taken is not None and taken.args == (job_id,)
    assert redis_client.llen(f"{prefix}dramatiq:backups.DQ") == 0
    eta_ms = taken.options["eta"]

    assert reaper.run_once() == []  # due just now: a worker holding it would move it within a second
    acted: list[Reaped] = []
    wait_until(lambda: bool(acted.extend(reaper.run_once()) or acted), timeout=GRACE + 5,
               what="the reaper to replace the forgotten message")
    assert redis_now_ms(redis_client) - eta_ms >= GRACE * 1000
    assert [(r.job_id, r.action) for r in acted] == [(job_id, "requeued")]
    # The forgotten message is gone (Dramatiq can never deliver it too); one fresh message replaces it.
    assert messages(redis_client, prefix, "backups.DQ") == []
    assert [(m["actor_name"], m["args"]) for m in messages(redis_client, prefix, "backups")] == [
        ("backup_transfer", [job_id])]


def test_pending_job_whose_hand_off_was_lost_is_cancelled_after_requeues(jobs, redis_client, engine_config):  # noqa: ANN001
    prefix = engine_config.key_prefix
    reaper = Reaper(redis_client, prefix, Services(engine_config).enqueue, GRACE, max_requeues=1)
    job_id = jobs.create("backup", "docs", metadata={"storage_id": "st_test"}).id  # never enqueued
    acted: list[Reaped] = []
    wait_until(lambda: bool(acted.extend(reaper.run_once()) or acted), timeout=GRACE + 5,
               what="the reaper to notice the pending job")
    assert [(r.job_id, r.action, r.status) for r in acted] == [(job_id, "requeued", "pending")]
    assert [m["actor_name"] for m in messages(redis_client, prefix, "backups")] == ["backup_create"]

    lose_messages(redis_client, prefix)
    beat_long_ago(redis_client, prefix, job_id)
    assert [(r.job_id, r.action) for r in reaper.run_once()] == [(job_id, "failed")]
    cancelled = jobs.get(job_id)
    assert cancelled.status == "cancelled"  # a job that never ran is cancelled, and a retry resubmits it
    assert cancelled.error.startswith("this job's queued message was lost")
