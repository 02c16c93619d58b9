"""Retention rules as pure functions (``now`` injected), protection by active restore jobs, a pin that
arrives while retention runs, and pruning a backend: only the named collection and series lose backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.storage import LocalStorage
from shared.domain.catalog import manifest_refs, pin_key, read_all
from shared.domain.manifest import Manifest, manifest_key
from shared.domain.retention import Policy, protected_names, prune, select_deletions
from shared.records.job_store import JobStore
from shared.runtime.timeutil import to_iso
from tests.backup_factory import put_backup

NOW = datetime(2026, 11, 24, 3, tzinfo=UTC)


def backup(days_old: float, n: int) -> Manifest:
    created = NOW - timedelta(days=days_old)
    backup_id = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{n:08x}"
    return Manifest(backup_id=backup_id, job_id="j", type="backup", collection="docs", shard_id=None,
                    qdrant_snapshot_name=f"docs-{n}.snapshot", key=f"docs/{backup_id}/collection.snapshot",
                    size=1, sha256="0" * 64, created_at=to_iso(created), qdrant_version=None, points_count=None,
                    qbm_version="t")


SERIES = [backup(d, i) for i, d in enumerate((10, 8, 6, 4, 2, 0.5))]  # oldest first


def ids(manifests: list[Manifest]) -> list[int]:
    return sorted(int(m.backup_id[-8:], 16) for m in manifests)


def test_keep_last():
    assert ids(select_deletions(SERIES, Policy(keep_last=2), NOW, set())) == [0, 1, 2, 3]
    assert select_deletions(SERIES, Policy(keep_last=6), NOW, set()) == []


def test_max_age():
    assert ids(select_deletions(SERIES, Policy(max_age_days=5), NOW, set())) == [0, 1, 2]


def test_both_rules_each_delete():
    assert ids(select_deletions(SERIES, Policy(keep_last=4, max_age_days=7), NOW, set())) == [0, 1]


def test_the_newest_is_never_deleted():
    assert ids(select_deletions(SERIES, Policy(max_age_days=0.01), NOW, set())) == [0, 1, 2, 3, 4]
    assert select_deletions(SERIES[:1], Policy(keep_last=1, max_age_days=0.01), NOW, set()) == []


def test_input_order_does_not_matter():
    assert ids(select_deletions(list(reversed(SERIES)), Policy(keep_last=3), NOW, set())) == [0, 1, 2]


def test_backups_named_by_restores_are_kept():
    protected = {SERIES[0].backup_id, SERIES[1].qdrant_snapshot_name}
    assert ids(select_deletions(SERIES, Policy(keep_last=2), NOW, protected)) == [2, 3]
    # one in the middle of the series is passed over, the older ones still go
    assert ids(select_deletions(SERIES, Policy(keep_last=2), NOW, {SERIES[2].backup_id})) == [0, 1, 3]


def test_max_age_counts_whole_days_from_now():
    exactly = backup(5, 7)  # created exactly five days before NOW: not older than five days
    assert select_deletions([SERIES[-1], exactly], Policy(max_age_days=5), NOW, set()) == []
    assert select_deletions([SERIES[-1], exactly], Policy(max_age_days=4.99), NOW, set()) == [exactly]


def test_only_pending_and_running_restores_protect(redis_client, key_prefix):
    jobs = JobStore(redis_client, key_prefix)
    pending = jobs.create("restore", "docs", snapshot_name="20261120T000000Z-00000001")
    running = jobs.create("shard_restore", "docs", shard_id=0, snapshot_name="docs-0.snapshot")
    jobs.transition(running.id, "running")
    done = jobs.create("restore", "docs", snapshot_name="20261101T000000Z-00000002")
    jobs.transition(done.id, "running")
    jobs.transition(done.id, "completed")
    jobs.create("backup", "docs")
    backing_up = jobs.create("backup", "docs", snapshot_name="20261121T000000Z-00000003")  # not a restore
    jobs.transition(backing_up.id, "running")
    assert protected_names(jobs) == {pending.snapshot_name, running.snapshot_name}


def test_restores_beyond_one_page_protect_too(redis_client, key_prefix):
    jobs = JobStore(redis_client, key_prefix)
    names = [f"20261120T000000Z-{n:08x}" for n in range(501)]  # the listing reads 500 jobs at a time
    for name in names:
        jobs.create("restore", "docs", snapshot_name=name)
    assert protected_names(jobs) == set(names)


def test_policy_from_a_schedule():
    assert Policy.from_dict(None) is None
    assert Policy.from_dict({"keep_last": None, "max_age_days": None}) is None
    assert Policy.from_dict({"keep_last": 3}) == Policy(keep_last=3)
    assert Policy.from_dict({"max_age_days": 2.5}) == Policy(max_age_days=2.5)
    assert Policy.from_dict({"keep_last": 3, "max_age_days": 2.5}) == Policy(keep_last=3, max_age_days=2.5)


class PinnedWhileRetentionRuns(LocalStorage):
    """Someone pins ``target`` after retention listed the backups, while it reads their manifests."""

    target: Manifest | None = None

    def read_bytes(self, key: str, max_size: int = 16 * 1024 * 1024) -> bytes:
        if self.target is not None and key == manifest_key(self.target.collection, self.target.backup_id):
            self.write_bytes(pin_key(self.target.collection, self.target.backup_id), b"{}")
        return super().read_bytes(key, max_size)


def test_a_backup_pinned_while_retention_runs_is_kept(tmp_path):
    storage = PinnedWhileRetentionRuns(tmp_path)
    made = [put_backup(storage, "docs", NOW - timedelta(days=d)) for d in (3, 2, 1)]
    storage.target = made[0]
    outcome = prune(storage, "docs", Policy(keep_last=1), now=NOW, protected=set())
    assert [m.backup_id for m in outcome.deleted] == [made[1].backup_id]
    assert [m.backup_id for m in outcome.pinned] == [made[0].backup_id]
    assert storage.exists(made[0].key) and not storage.exists(made[1].key)


def test_prune_deletes_only_in_the_named_collection_and_shard_series(tmp_path):
    storage = LocalStorage(tmp_path)
    made = {(collection, shard): [put_backup(storage, collection, NOW - timedelta(days=days), shard_id=shard)
                                  for days in (3, 2, 1)]
            for collection in ("docs", "other") for shard in (None, 0, 1)}

    def left(collection: str, shard: int | None) -> list[str]:
        kept = read_all(storage, manifest_refs(storage, collection))
        return sorted(entry.manifest.backup_id for entry in kept if entry.manifest.shard_id == shard)

    def ids_of(manifests: list[Manifest]) -> list[str]:
        return sorted(m.backup_id for m in manifests)

    outcome = prune(storage, "docs", Policy(keep_last=1), now=NOW, protected=set(), shard_id=0)  # as a shard schedule
    assert ids_of(outcome.deleted) == ids_of(made["docs", 0][:2]) == sorted(
        set(ids_of(made["docs", 0])) - set(left("docs", 0)))
    assert left("docs", 0) == ids_of(made["docs", 0][2:])
    untouched = [("docs", None), ("docs", 1), ("other", None), ("other", 0), ("other", 1)]
    assert all(left(c, s) == ids_of(made[c, s]) for c, s in untouched)

    outcome = prune(storage, "docs", Policy(keep_last=2), now=NOW, protected=set())  # every series of docs
    assert ids_of(outcome.deleted) == ids_of([made["docs", None][0], made["docs", 1][0]])
    assert [left("docs", s) for s in (None, 0, 1)] == [ids_of(made["docs", None][1:]), ids_of(made["docs", 0][2:]),
                                                       ids_of(made["docs", 1][1:])]
    assert all(left("other", s) == ids_of(made["other", s]) for s in (None, 0, 1))

    dry = prune(storage, "other", Policy(keep_last=1), now=NOW, protected=set(), dry_run=True)
    assert len(dry.deleted) == 6 and all(left("other", s) == ids_of(made["other", s]) for s in (None, 0, 1))
