"""Fixtures for scheduler tests: the real stores on the test's Redis prefix and a Firing whose hand-off to
the workers is recorded instead of queued (no worker runs in these tests)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.adapters.qdrant import QdrantClient
from shared.intake.submit import JobSubmitter
from shared.records.job_store import JobStore
from shared.records.storage_configs import StorageConfigStore
from shared.schedules.firing import Firing
from shared.schedules.store import ScheduleStore
from tests.recorder import EnqueueRecorder


@pytest.fixture
def schedules(redis_client, key_prefix) -> ScheduleStore:
    return ScheduleStore(redis_client, key_prefix)


@pytest.fixture
def job_store(redis_client, key_prefix) -> JobStore:
    return JobStore(redis_client, key_prefix)


@pytest.fixture
def handed_over() -> EnqueueRecorder:
    return EnqueueRecorder()


@pytest.fixture
def firing(redis_client, key_prefix, schedules, job_store, handed_over, tmp_path: Path) -> Firing:
    storages = StorageConfigStore(redis_client, key_prefix)
    root = tmp_path / "backups"
    root.mkdir()
    storages.create({"name": "disk", "type": "local", "path": str(root), "is_default": True})
    return Firing(
        schedules=schedules,
        submitter=JobSubmitter(job_store, storages, handed_over),
        qdrant=QdrantClient("http://127.0.0.1:9", retries=0),  # these schedules name their collections
        grace=timedelta(hours=1),
        holder="test",
    )
