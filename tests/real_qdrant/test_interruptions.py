"""A backup from a real Qdrant interrupted while its snapshot is being copied: cancelled by the user, or Qdrant
stopped and started again under it. The worker talks to Qdrant through a proxy that paces Qdrant's bytes, so the
copy of the ~28 MB snapshot lasts seconds and the test acts while it runs (seen in the job's progress)."""

from __future__ import annotations

import pytest

from tests import files
from tests.engine.conftest import wait_for_job, wait_until
from tests.real_qdrant import data
from tests.real_qdrant.helpers import (
    listed_backups,
    post_job,
    register_storage,
)
from workers.backup import CREATE_END, TRANSFER_END

pytestmark = pytest.mark.real_qdrant

MiB = 1024 * 1024


def copying(jobs, job_id: str) -> bool:
    """The job is in its transfer step: past the snapshot's creation, not yet at the end of the copy."""
    job = jobs.get(job_id)
    assert job.status in ("pending", "running"), job
    return CREATE_END < job.progress < TRANSFER_END


def files_under(root) -> list[str]:  # noqa: ANN001
    return [str(p.relative_to(root)) for p in files.files_under(root)]


def test_cancel_mid_transfer_leaves_no_backup_and_no_snapshot(client, jobs, throttled_qdrant, start_worker,
                                                              qdrant_node, docs, engine_config):
    storage = register_storage(client, "local", engine_config)
    throttled_qdrant.throttle(4 * MiB)
    worker = start_worker()
    job = post_job(client, type="backup", collection_name=docs)
    wait_until(lambda: copying(jobs, job["id"]), timeout=60, what="the backup to be copying its snapshot")
    assert len(qdrant_node.result("GET", f"/collections/{docs}/snapshots")) == 1

    resp = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 200 and resp.get_json()["result"]["status"] == "cancelled"

    root = engine_config.storage_roots[0]
    wait_until(lambda: not qdrant_node.result("GET", f"/collections/{docs}/snapshots") and not files_under(root),
               timeout=30, what="the worker to delete the snapshot on Qdrant and the partial copy in storage")
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "cancelled" and done["progress"] < TRANSFER_END
    assert listed_backups(client, storage["id"], docs) == []
    # The worker logs the clean-up after it is done, so the line can trail the deletions seen above.
    wait_until(lambda: "job cancelled; cleaned up" in worker.log(), timeout=30,
               what="the worker to report the cancelled job cleaned up")
    # The collection itself is untouched.
    assert data.exact_count(qdrant_node, docs) == data.POINTS
