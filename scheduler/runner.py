"""The leader's APScheduler: an in-memory BackgroundScheduler kept equal to the schedules in Redis.

Only the leader runs one. It re-reads the schedules whenever the store's version counter moves (polled
about every second, so API changes apply within seconds without a restart) and changes only the jobs whose
timing changed -- re-adding an unchanged job would needlessly recompute its next run.

APScheduler's executors do not tell the job function which run time it is executing, and the scheduled
time is what the per-tick claim and ``scheduled_for`` need. :class:`TickExecutor` (a custom executor, the
extension point APScheduler documents) passes it as the last argument. Every job is ``coalesce=True`` (a
backlog of runs becomes one) with ``misfire_grace_time`` set to QBM_MISFIRE_GRACE -- deliberately, instead
of APScheduler's 1 s default that silently drops runs; a run handed over later than that is recorded as
skipped by :meth:`shared.schedules.firing.Firing.fire_tick`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from shared.schedules.store import ScheduleStore
from shared.schedules.triggers import InvalidSchedule, build_trigger

log = logging.getLogger("qbm.scheduler")

FireFunction = Callable[[str, datetime], Any]


class TickExecutor(BaseExecutor):
    """Runs ``job.func(*job.args, scheduled_time)`` in a small thread pool."""

    def __init__(self, max_workers: int = 4) -> None:
        super().__init__()
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="qbm-fire")

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        assert self._pool is not None
        tick = run_times[-1].astimezone(UTC)

        def done(future: Future) -> None:
            exc = future.exception()
            if exc is None:
                self._run_job_success(job.id, [])
            else:
                self._run_job_error(job.id, exc, exc.__traceback__)

        self._pool.submit(job.func, *job.args, tick).add_done_callback(done)


def _fingerprint(schedule: dict[str, Any]) -> tuple:
    return (schedule.get("cron"), schedule.get("interval_seconds"), schedule.get("timezone"),
            schedule.get("baseline_at"))


class ScheduleRunner:
    def __init__(self, store: ScheduleStore, fire: FireFunction, *, grace_seconds: int) -> None:
        self.store = store
        self.fire = fire
        self.grace_seconds = grace_seconds
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": TickExecutor()},
            job_defaults={"coalesce": True, "max_instances": 3, "misfire_grace_time": max(1, grace_seconds)},
        )
        self._fingerprints: dict[str, tuple] = {}
        self._version: int | None = None

    def start(self) -> None:
        self.sync(force=True)
        self._scheduler.start()

    def stop(self) -> None:
        """Stop firing; wait for runs already under way (they only create jobs, which takes moments)."""
        self._scheduler.shutdown(wait=True)

    def sync(self, *, force: bool = False) -> bool:
        """Bring the APScheduler jobs in line with Redis if the version moved. True when it re-read."""
        version = self.store.version()
        if not force and version == self._version:
            return False
        schedules = {s["id"]: s for s in self.store.list() if s["enabled"]}
        for schedule_id in list(self._fingerprints):
            current = schedules.get(schedule_id)
            if current is None or _fingerprint(current) != self._fingerprints[schedule_id]:
                with contextlib.suppress(JobLookupError):  # APScheduler drops jobs whose trigger has ended
                    self._scheduler.remove_job(schedule_id)
                del self._fingerprints[schedule_id]
        for schedule_id, schedule in schedules.items():
            if schedule_id in self._fingerprints:
                continue
            try:
                trigger = build_trigger(schedule)
            except InvalidSchedule as exc:  # stored before a rule tightened; the API shows it, we skip it
                log.warning("schedule %s cannot run: %s", schedule_id, exc, extra={"schedule_id": schedule_id})
                continue
            self._scheduler.add_job(self.fire, trigger=trigger, args=[schedule_id], id=schedule_id,
                                    name=schedule.get("name") or schedule_id, replace_existing=True)
            self._fingerprints[schedule_id] = _fingerprint(schedule)
        self._version = version
        log.info("schedules in effect: %d (version %d)", len(self._fingerprints), version)
        return True
