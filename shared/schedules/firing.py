"""What firing a schedule does: decide the jobs, create them through the API's code path, record the run.

Called by the leader for each tick (``fire_tick``: claimed first, so a tick runs once however many
schedulers there are), at start for missed ticks (``catch_up``), and by POST /schedules/{id}/run (``run``).
Jobs are created by :class:`shared.intake.submit.JobSubmitter` -- the same validation, records and hand-off as
POST /jobs -- and carry ``metadata.schedule_id`` (and ``scheduled_for``, the tick) so a finished backup
knows whose retention applies.

Claiming happens before the jobs are created: a process that dies in between loses that tick (at most once)
rather than risking two backups of every collection (at least once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.adapters.qdrant import QdrantClient, QdrantError
from shared.intake.submit import HandOverFailed, InvalidJobRequest, JobSubmitter
from shared.runtime.timeutil import to_iso, utcnow
from shared.schedules.store import ALL_COLLECTIONS, ScheduleNotFound, ScheduleStore, handled_until
from shared.schedules.timing import is_too_late, plan_catch_up, wall_clock_slot
from shared.schedules.triggers import InvalidSchedule, build_trigger, check_timezone, is_wall_clock

log = logging.getLogger("qbm.scheduler")

#: Claims outlive the repeated hour of a fall-back night and any catch-up within the grace period.
CLAIM_MARGIN = timedelta(hours=2)
#: A running leader hands ticks over within milliseconds; only a stall longer than this (or than the grace
#: period, if longer) makes a tick "too late". A floor, so QBM_MISFIRE_GRACE=0 (never catch up at start)
#: does not also skip live ticks that arrive a few milliseconds after their time.
LIVE_LATENESS_FLOOR = timedelta(minutes=1)


@dataclass
class Firing:
    schedules: ScheduleStore
    submitter: JobSubmitter
    qdrant: QdrantClient
    grace: timedelta
    holder: str = "api"
    #: Asked right before a tick is claimed: a scheduler that lost its lease must not fire.
    may_fire: Callable[[], bool] = field(default=lambda: True)

    # --- what a run creates ---

    def targets(self, schedule: dict[str, Any]) -> list[tuple[str, int | None]]:
        """(collection, shard) pairs to back up now. ``["*"]`` means Qdrant's collections at this moment;
        shard schedules back up every shard Qdrant lists for the collection, each as its own job."""
        names = schedule["collections"]
        if names == [ALL_COLLECTIONS]:
            names = sorted(self.qdrant.list_collections())
        if schedule["type"] == "backup":
            return [(name, None) for name in names]
        pairs: list[tuple[str, int | None]] = []
        for name in names:
            info = self.qdrant.collection_cluster_info(name)
            shards = {s["shard_id"] for s in info.get("local_shards", []) + info.get("remote_shards", [])}
            pairs += [(name, shard) for shard in sorted(shards)]
        return pairs

    def run(self, schedule: dict[str, Any], *, tick: datetime | None = None, skipped: int = 0) -> dict[str, Any]:
        """Create the schedule's jobs now and record the run as its ``last_run``; returns that record.

        ``tick`` is the scheduled time (None for "run now", which does not count as a tick). Problems with
        one collection do not stop the others; they are collected in the record's ``error``.
        """
        job_ids: list[str] = []
        errors: list[str] = []
        try:
            targets = self.targets(schedule)
        except QdrantError as exc:
            targets = []
            errors.append(f"could not ask Qdrant which collections/shards to back up: {exc.message}")
        metadata: dict[str, Any] = {"schedule_id": schedule["id"]}
        if schedule.get("storage_id"):
            metadata["storage_id"] = schedule["storage_id"]
        if tick is not None:
            metadata["scheduled_for"] = to_iso(tick)
        for collection, shard in targets:
            body: dict[str, Any] = {"type": schedule["type"], "collection_name": collection,
                                    "metadata": dict(metadata)}
            if shard is not None:
                body["shard_id"] = shard
            try:
                job_ids.append(self.submitter.submit(body).id)
            except InvalidJobRequest as exc:
                errors.append(f"{collection}: {exc}")
            except HandOverFailed as exc:
                job_ids.append(exc.job_id)
                errors.append(f"{collection}: {exc}")
        record = {
            "at": to_iso(tick if tick is not None else utcnow()),
            "job_ids": job_ids,
            "status": "failed" if errors and not job_ids else "submitted",
            "error": "; ".join(errors) or None,
            "skipped": skipped,
            "manual": tick is None,
        }
        self.schedules.record_run(schedule["id"], record, tick=tick)
        log.info("schedule %s ran: %d job(s)%s", schedule["id"], len(job_ids),
                 f", errors: {record['error']}" if errors else "",
                 extra={"schedule_id": schedule["id"], "job_ids": job_ids})
        return record

    # --- ticks ---

    def fire_tick(self, schedule_id: str, tick: datetime, *, now: datetime | None = None, skipped: int = 0
                  ) -> dict[str, Any] | None:
        """Run one scheduled tick, once: returns the run record, or None when this process must not run it
        (schedule gone or disabled, lease lost, tick already claimed by another process or slot)."""
        now = now or utcnow()
        try:
            schedule = self.schedules.get(schedule_id)
        except ScheduleNotFound:
            return None
        if not schedule["enabled"] or not self.may_fire():
            return None
        try:
            tz = check_timezone(schedule["timezone"])
        except InvalidSchedule:
            return None
        slot = wall_clock_slot(tick, tz) if is_wall_clock(schedule) else None
        ttl = int((self.grace + CLAIM_MARGIN).total_seconds())
        if not self.schedules.claim_tick(schedule_id, tick, slot, ttl_seconds=ttl, holder=self.holder):
            log.info("tick %s of schedule %s already fired", to_iso(tick), schedule_id,
                     extra={"schedule_id": schedule_id})
            return None
        limit = max(self.grace, LIVE_LATENESS_FLOOR)
        if is_too_late(tick, now, limit):
            record = {"at": to_iso(tick), "job_ids": [], "status": "skipped", "skipped": skipped + 1,
                      "error": f"the run due at {to_iso(tick)} was handed over only at {to_iso(now)}, more than "
                               f"{int(limit.total_seconds())} s late; skipped",
                      "manual": False}
            self.schedules.record_run(schedule_id, record, tick=tick)
            log.warning(record["error"], extra={"schedule_id": schedule_id})
            return record
        return self.run(schedule, tick=tick, skipped=skipped)

    def catch_up(self, schedule: dict[str, Any], now: datetime) -> dict[str, Any] | None:
        """At start: fire the newest run missed within the grace period (once), record older ones as skipped."""
        if not schedule["enabled"]:
            return None
        try:
            plan = plan_catch_up(build_trigger(schedule), handled_until(schedule), now, self.grace)
        except InvalidSchedule:
            return None
        if plan.fire is not None:
            log.info("schedule %s missed a run at %s while no scheduler was up; running it now",
                     schedule["id"], to_iso(plan.fire), extra={"schedule_id": schedule["id"]})
            return self.fire_tick(schedule["id"], plan.fire, now=now, skipped=plan.skipped)
        if plan.skipped and plan.newest is not None:
            record = {"at": to_iso(plan.newest), "job_ids": [], "status": "skipped", "skipped": plan.skipped,
                      "error": f"{plan.skipped} run(s) missed while no scheduler was up, the newest more than "
                               f"{int(self.grace.total_seconds())} s ago; not run",
                      "manual": False}
            self.schedules.record_run(schedule["id"], record, tick=plan.newest)
            log.warning(record["error"], extra={"schedule_id": schedule["id"]})
            return record
        return None
