"""Retention: which backups to delete, shared by the scheduled-backup hook and POST /backups/prune.

Scope: a schedule's retention only sees the backups that schedule made (their manifest carries its
``schedule_id``); backups made by hand or by another schedule are never touched by it. POST /backups/prune sees
every backup of the collection unless it names a ``schedule_id``. Pinned backups are set aside before any rule
runs: they are never deleted and do not count towards ``keep_last``.

Rules, applied per series within that scope -- the collection backups of a collection, and each of its shards
separately, so a shard schedule with ``keep_last: 2`` keeps two backups of every shard:

* ``keep_last: N`` deletes all but the newest N; ``max_age_days: D`` deletes those older than D days. A
  backup breaking either rule is deleted.
* The newest backup of a series is never deleted, whatever the rules say: a misconfigured policy (or a
  clock far off) must never leave a collection with no backup at all.
* A backup that a pending or running restore job names (by backup id or by its Qdrant snapshot name) is
  never deleted: the restore is about to read it.

Deleting removes the manifest first, then the data (:func:`shared.domain.catalog.delete_backup`, which checks
the pin once more just before, so a backup pinned while retention ran is kept).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.adapters.storage.base import Storage
from shared.domain.catalog import BackupPinned, delete_backup, manifest_refs, read_all
from shared.domain.manifest import Manifest
from shared.records.job_store import ACTIVE_STATUSES, JobStore
from shared.runtime.timeutil import parse_iso

RESTORE_TYPES = ("restore", "shard_restore")
ALL_SHARDS: Any = object()
ANY_MAKER: Any = object()


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    max_age_days: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Policy | None:
        """A policy from a schedule's ``retention`` (None when it sets no rule)."""
        if not data or (data.get("keep_last") is None and data.get("max_age_days") is None):
            return None
        return cls(keep_last=data.get("keep_last"), max_age_days=data.get("max_age_days"))


@dataclass
class Outcome:
    deleted: list[Manifest] = field(default_factory=list)
    kept: list[Manifest] = field(default_factory=list)
    #: The kept backups that were kept because they are pinned.
    pinned: list[Manifest] = field(default_factory=list)


def select_deletions(series: Iterable[Manifest], policy: Policy, now: datetime, protected: set[str]
                     ) -> list[Manifest]:
    """The backups of one series the policy deletes (pure: no I/O, ``now`` injected)."""
    # created_at has whole seconds; job ids start with their creation time in microseconds, so they order
    # two backups taken within the same second.
    ordered = sorted(series, key=lambda m: (parse_iso(m.created_at), m.job_id, m.backup_id), reverse=True)
    doomed = []
    for index, manifest in enumerate(ordered):
        if index == 0:
            continue  # the newest backup always stays
        if manifest.backup_id in protected or manifest.qdrant_snapshot_name in protected:
            continue
        too_many = policy.keep_last is not None and index >= policy.keep_last
        too_old = (policy.max_age_days is not None
                   and now - parse_iso(manifest.created_at) > timedelta(days=policy.max_age_days))
        if too_many or too_old:
            doomed.append(manifest)
    return doomed


def protected_names(jobs: JobStore) -> set[str]:
    """Backup ids / snapshot names that pending or running restore jobs are about to read."""
    names: set[str] = set()
    for status in ACTIVE_STATUSES:
        for job_type in RESTORE_TYPES:
            page = 1
            while True:
                items, total = jobs.list(status=status, type=job_type, page=page, limit=500)
                names.update(job.snapshot_name for job in items if job.snapshot_name)
                if page * 500 >= total or not items:
                    break
                page += 1
    return names


def prune(storage: Storage, collection: str, policy: Policy, *, now: datetime, protected: set[str],
          shard_id: Any = ALL_SHARDS, schedule_id: Any = ANY_MAKER, dry_run: bool = False) -> Outcome:
    """Apply ``policy`` to the backups of ``collection`` in ``storage``: only the series of ``shard_id`` (None for
    collection backups) when given, only the backups schedule ``schedule_id`` made when given. Pinned backups
    are kept and left out of the rules. With ``dry_run`` nothing is deleted; the outcome says what would be."""
    listed = read_all(storage, sorted(manifest_refs(storage, collection)))
    series: dict[int | None, list[Manifest]] = defaultdict(list)
    outcome = Outcome()
    for item in listed:
        manifest = item.manifest
        if manifest.collection != collection or (shard_id is not ALL_SHARDS and manifest.shard_id != shard_id):
            continue
        if schedule_id is not ANY_MAKER and manifest.schedule_id != schedule_id:
            continue
        if item.pinned:
            outcome.pinned.append(manifest)
        else:
            series[manifest.shard_id].append(manifest)
    for members in series.values():
        doomed = select_deletions(members, policy, now, protected)
        doomed_ids = {m.backup_id for m in doomed}
        for manifest in doomed:
            if not dry_run:
                try:
                    delete_backup(storage, manifest)
                except BackupPinned:
                    outcome.pinned.append(manifest)  # pinned while retention ran
                    continue
            outcome.deleted.append(manifest)
        outcome.kept += [m for m in members if m.backup_id not in doomed_ids]
    outcome.kept += outcome.pinned
    for found in (outcome.deleted, outcome.kept, outcome.pinned):
        found.sort(key=lambda m: m.backup_id, reverse=True)
    return outcome
