"""The worker frame in-process, on Dramatiq's ``StubBroker``: the real actors and step functions, real Redis,
the Qdrant double over HTTP and local disk -- no worker subprocess. What the frame promises: a job runs its
chain to the end, a step that already recorded its result is not run again, and a cancelled job is cleaned up
instead of run."""

from __future__ import annotations

import dramatiq
import pytest
import requests
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from shared.domain.manifest import read_manifest
from shared.pipeline.dispatch import make_enqueuer
from workers.actors import declare_actors
from workers.context import Context


@pytest.fixture
def stub():
    broker = StubBroker()
    broker.add_middleware(CurrentMessage())
    broker.emit_after("process_boot")
    yield broker
    broker.close()


@pytest.fixture
def ctx(engine_config, stub):
    context = Context(engine_config)
    context.enqueue = make_enqueuer(stub, context.jobs)  # the hand-off goes to the stub broker
    return context


@pytest.fixture
def storage_id(ctx, engine_config):
    return ctx.storage_configs.create({"name": "disk", "type": "local", "is_default": True,
                                       "path": str(engine_config.storage_roots[0] / "backups")})["id"]


@pytest.fixture
def run(stub, ctx):
    declare_actors(stub, lambda: ctx)
    worker = dramatiq.Worker(stub, worker_timeout=50)
    worker.start()

    def run_queue(queue: str) -> None:
        stub.join(queue, fail_fast=True, timeout=30_000)
        worker.join()

    yield run_queue
    worker.stop()


def test_a_backup_runs_its_chain_in_process(ctx, run, qdrant, storage_id):
    qdrant.create_collection("docs", points=7)
    job = ctx.submitter.submit({"type": "backup", "collection_name": "docs"})
    run("backups")
    done = ctx.jobs.get_with_steps(job.id)
    assert (done.status, done.progress, done.error) == ("completed", 100, None)
    assert set(done.steps) >= {"create_started", "create", "transfer", "finalize"}
    _, storage = ctx.open_storage(done.storage_id)
    manifest = read_manifest(storage, "docs", done.snapshot_name)
    assert manifest.points_count == 7 and manifest.sha256 == done.metadata["sha256"]
    # what a restore relies on: the kind of backup, what it is of, and where its bytes are (also in the job)
    assert (manifest.type, manifest.collection, manifest.shard_id) == ("backup", "docs", None)
    assert manifest.key == done.metadata["key"] and storage.stat(manifest.key).size == manifest.size


def test_a_recorded_step_is_not_run_again(ctx, run, qdrant, storage_id):
    qdrant.create_collection("docs", points=3)
    first = ctx.submitter.submit({"type": "backup", "collection_name": "docs"})
    run("backups")
    snapshot = ctx.jobs.get_with_steps(first.id).steps["create"]
    # A second job that already has its create step recorded (as after a crash right after it) goes on from
    # the transfer: Qdrant is asked for no new snapshot.
    second = ctx.jobs.create("backup", "docs", metadata={"storage_id": storage_id, "keep_on_qdrant": True})
    ctx.jobs.update(second.id, snapshot_name="20261201T000000Z-0000beef")
    made = _new_snapshot(qdrant)  # its own bytes: the double's archive holds the time it was made
    ctx.jobs.record_step(second.id, "create", {**snapshot, "backup_id": "20261201T000000Z-0000beef",
                                               "snapshot": made["name"], "size": made["size"],
                                               "checksum": made["checksum"]})
    creates_before = _snapshot_creates(qdrant)
    ctx.enqueue(second.id)
    run("backups")
    assert ctx.jobs.get(second.id).status == "completed"
    assert _snapshot_creates(qdrant) == creates_before


def test_a_cancelled_job_is_cleaned_up_not_run(ctx, run, qdrant, storage_id):
    qdrant.create_collection("docs", points=3)
    job = ctx.jobs.create("backup", "docs", metadata={"storage_id": storage_id})
    ctx.jobs.transition(job.id, "cancelled")
    ctx.enqueue(job.id, new_job_type="backup")
    run("backups")
    after = ctx.jobs.get_with_steps(job.id)
    assert after.status == "cancelled" and after.steps == {} and after.started_at is None
    assert _snapshot_creates(qdrant) == 0


def _snapshot_creates(qdrant) -> int:
    return sum(1 for method, path in qdrant.requests_seen if method == "POST" and path.endswith("/snapshots"))


def _new_snapshot(qdrant) -> dict:
    """A snapshot made on the double directly (not through QBM), for a job to adopt as its own: Qdrant's
    description of it (name, size, checksum)."""
    return requests.post(f"{qdrant.url}/collections/docs/snapshots", params={"wait": "true"},
                         timeout=30).json()["result"]
