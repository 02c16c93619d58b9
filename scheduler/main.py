"""The scheduler process (``qbm scheduler``): follow the leader lease, and while leading, fire schedules.

Any number may run (on different machines): each polls the lease about every second. The one that holds
it first catches up runs missed while no scheduler was up, then keeps an in-memory APScheduler in sync with
the schedules in Redis; the others just keep polling, ready to take over when the lease expires.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timedelta

from scheduler.leader import Leadership
from scheduler.reaper import Reaper
from scheduler.runner import ScheduleRunner
from shared.runtime.config import Config
from shared.runtime.timeutil import utcnow
from shared.schedules.firing import Firing
from shared.services import Services

log = logging.getLogger("qbm.scheduler")

#: How often the lease is taken/renewed and the schedules' version checked.
POLL_SECONDS = 1.0


class SchedulerProcess:
    def __init__(self, config: Config) -> None:
        svc = Services(config)  # its Redis client follows a Sentinel failover when configured
        self.store = svc.schedules
        self.leadership = Leadership(svc.redis, config.key_prefix, config.scheduler_lease_seconds)
        self.grace_seconds = config.misfire_grace_seconds
        self.firing = Firing(
            schedules=self.store,
            submitter=svc.submitter,
            qdrant=svc.qdrant,
            grace=timedelta(seconds=config.misfire_grace_seconds),
            holder=self.leadership.holder,
            may_fire=self.leadership.confirm,
        )
        self.runner: ScheduleRunner | None = None
        #: Re-enqueues (or fails) jobs whose message was lost; runs only while leading (scheduler/reaper.py).
        self.reaper = Reaper(svc.redis, config.key_prefix, svc.enqueue, config.reaper_grace_seconds)

    def _fire(self, schedule_id: str, tick: datetime | None = None) -> None:
        """APScheduler's job function; :class:`scheduler.runner.TickExecutor` always passes the tick (the
        default only satisfies APScheduler's check of the arguments when the job is added)."""
        self.firing.fire_tick(schedule_id, tick or utcnow())

    def step(self) -> None:
        """One poll: take, keep or lose the lease, and act on it."""
        leading = self.leadership.poll()
        if leading and self.runner is None:
            runner = ScheduleRunner(self.store, self._fire, grace_seconds=self.grace_seconds)
            runner.start()  # from now on APScheduler fires new ticks...
            self.runner = runner
            now = utcnow()
            for schedule in self.store.list():  # ...and ticks up to now are caught up (claims dedupe overlap)
                try:
                    self.firing.catch_up(schedule, now)
                except Exception:
                    log.exception("catch-up of schedule %s failed", schedule["id"],
                                  extra={"schedule_id": schedule["id"]})
        elif not leading and self.runner is not None:
            self.runner.stop()
            self.runner = None
        elif self.runner is not None:
            self.runner.sync()
        if leading:
            try:
                self.reaper.maybe_run()
            except Exception:
                log.exception("reaper pass failed; trying again")

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler %s started; lease %ss, misfire grace %ss", self.leadership.holder,
                 self.leadership.ttl, self.grace_seconds)
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("scheduler poll failed; trying again")
                stop.wait(POLL_SECONDS)
        finally:
            if self.runner is not None:
                self.runner.stop()
            self.leadership.release()
            log.info("scheduler %s stopped", self.leadership.holder)


def run(config: Config) -> int:
    if config.log_level != "DEBUG":
        # APScheduler logs every job added and every run at INFO; our own lines already say what matters.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    SchedulerProcess(config).run(stop)
    return 0
