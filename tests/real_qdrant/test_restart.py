"""Qdrant stopped and started again while a backup copies its snapshot: the copy fails, is retried, and the job
completes with the whole snapshot. The worker talks to Qdrant through a proxy that paces Qdrant's bytes, so the
copy lasts seconds and Qdrant is stopped while it runs (seen in the job's progress)."""

from __future__ import annotations

import pytest

from tests.engine.conftest import wait_for_job, wait_until
from tests.real_qdrant import data
from tests.real_qdrant.helpers import post_job, register_storage, sha256_of, storage_backend, stored_manifest
from tests.real_qdrant.test_interruptions import MiB, copying

pytestmark = pytest.mark.real_qdrant


@pytest.fixture
def own_node(start_qdrant_node):
    return start_qdrant_node()


@pytest.fixture
def qbm_qdrant(own_node):
    """QBM talks to a node of this test's own: the test stops and starts it."""
    return own_node


def test_qdrant_restarted_mid_transfer_the_backup_is_retried_and_completes(app, client, jobs, throttled_qdrant,
                                                                           start_worker, own_node, engine_config):
    node = own_node
    data.create_collection(node, "docs", shard_number=3)
    storage = register_storage(client, "local", engine_config)
    throttled_qdrant.throttle(1 * MiB)  # a copy of many seconds: it is surely still running when Qdrant stops
    worker = start_worker()
    job = post_job(client, type="backup", collection_name="docs")
    wait_until(lambda: copying(jobs, job["id"]), timeout=60, what="the backup to be copying its snapshot")
    [snapshot] = node.result("GET", "/collections/docs/snapshots")

    # On SIGTERM Qdrant stops listening but finishes serving open requests (actix's graceful shutdown, up to
    # 30 s), so the download would complete: a short deadline before the SIGKILL makes the copy break off.
    node.stop(timeout=1)
    throttled_qdrant.throttle(None)
    node.start()

    done = wait_for_job(jobs, job["id"], worker=worker, timeout=180)
    assert done["status"] == "completed", done
    # The interrupted copy failed and was tried again, and the job says so.
    assert done["metadata"]["attempt"] >= 2 and done["metadata"]["last_error"], done["metadata"]
    manifest = stored_manifest(app, storage["id"], "docs", done["snapshot_name"])
    assert manifest["qdrant_snapshot_name"] == snapshot["name"]  # the same snapshot, copied whole the second time
    assert manifest["sha256"] == snapshot["checksum"] == sha256_of(storage_backend(app, storage["id"]),
                                                                   manifest["key"])
    assert manifest["points_count"] == data.POINTS
    assert node.result("GET", "/collections/docs/snapshots") == []
