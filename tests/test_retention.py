"""Retention rules as pure functions (``now`` injected), protection by active restore jobs, and a pin that
arrives while retention runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.adapters.storage import LocalStorage
from shared.domain.catalog import pin_key
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


def test_only_pending_and_running_restores_protect(redis_client, key_prefix):
    jobs = JobStore(redis_client, key_prefix)
    pending = jobs.create("restore", "docs", snapshot_name="20261120T000000Z-00000001")
    running = jobs.create("shard_restore", "docs", shard_id=0, snapshot_name="docs-0.snapshot")
    jobs.transition(running.id, "running")
    done = jobs.create("restore", "docs", snapshot_name="20261101T000000Z-00000002")
    jobs.transition(done.id, "running")
    jobs.transition(done.id, "completed")
    jobs.create("backup", "docs")
    assert protected_names(jobs) == {pending.snapshot_name, running.snapshot_name}
    assert Policy.from_dict({"keep_last": None, "max_age_days": None}) is None
    assert Policy.from_dict({"keep_last": 3}) == Policy(keep_last=3)


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
