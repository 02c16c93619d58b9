"""A worker SIGKILLed in the middle of a backup set, on the Qdrant double's 3-peer mode: another worker finishes
the set from the shards that are missing. The shards already copied are not streamed again, the ones cut by the
kill are streamed whole once more, and the set ends as one whole backup (every shard's bytes hash to its entry,
the manifest last) with nothing left behind: no stray file in storage, no snapshot on a node, no peer-stream slot
still held (which would hold up the next set).

The kill lands on a condition the test observes (a shard recorded, another one's stream under way), never on a
sleep. Redelivery waits for the dead worker's Dramatiq heartbeat to age (15 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.domain.manifest import manifest_key, set_digest
from tests.engine.conftest import make_engine_config, wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend
from tests.files import files_under

SHARDS, REPLICAS, POINTS = 6, 2, 600
MiB = 1024 * 1024


@pytest.fixture
def engine_config(redis_url, key_prefix, qdrant_cluster, tmp_path: Path, secret_key):  # noqa: ANN001, ANN201
    peers = tuple((str(pid), url) for pid, url in qdrant_cluster.rest_urls.items())
    return make_engine_config(redis_url, key_prefix, qdrant_cluster.url, tmp_path, secret_key, qdrant_peers=peers)


def _streams(qdrant_cluster, collection: str, shard_id: int) -> int:  # noqa: ANN001
    """How many times any peer was asked for this shard's snapshot stream."""
    path = f"/collections/{collection}/shards/{shard_id}/snapshot"
    return sum(1 for peer in qdrant_cluster.peers for r in peer.requests_log if r.method == "GET" and r.path == path)


def _recorded(jobs, job_id: str) -> set[int]:  # noqa: ANN001
    """The shards whose copy the job has recorded (``transfer:<shard>``)."""
    steps = jobs.get_with_steps(job_id).steps
    return {int(name.split(":", 1)[1]) for name in steps if name.startswith("transfer:")}


def test_worker_killed_mid_set_finishes_on_another_without_copying_done_shards_again(
        app, client, jobs, qdrant_cluster, start_worker, engine_config, redis_client):  # noqa: ANN001
    storage_cfg = register_storage(client, "local", engine_config)
    root = engine_config.storage_roots[0] / "backups"
    qdrant_cluster.create_collection("docs", points=POINTS, size_bytes=3 * MiB, shard_number=SHARDS,
                                     replication_factor=REPLICAS)
    for peer in qdrant_cluster.peers:
        peer.faults.throttle(128 * 1024)  # a shard's stream lasts seconds, so the kill lands inside one

    first = start_worker()
    job = post_job(client, type="backup", collection_name="docs")

    def mid_set() -> bool:
        done = _recorded(jobs, job["id"])
        in_flight = [s for s in range(SHARDS) if s not in done and _streams(qdrant_cluster, "docs", s)]
        return 1 <= len(done) < SHARDS and bool(in_flight)

    wait_until(mid_set, timeout=60, what="one shard copied and another one's stream under way")
    first.kill()
    copied_before = _recorded(jobs, job["id"])
    cut = {s for s in range(SHARDS) if s not in copied_before and _streams(qdrant_cluster, "docs", s)}
    assert copied_before and cut and jobs.get(job["id"]).status == "running"
    for peer in qdrant_cluster.peers:
        peer.faults.throttle(None)

    second = start_worker()
    done = wait_for_job(jobs, job["id"], timeout=120, worker=second)
    assert done["status"] == "completed", (done, second.log()[-3000:])
    assert done["progress"] == 100 and done["metadata"]["kind"] == "set"

    storage = storage_backend(app, storage_cfg["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("docs", done["snapshot_name"])))
    assert sorted(s["shard_id"] for s in manifest["shards"]) == list(range(SHARDS))
    for shard in manifest["shards"]:
        assert sha256_of(storage, shard["key"]) == shard["sha256"]
    assert manifest["sha256"] == set_digest(manifest["shards"]) and manifest["points_count"] == POINTS
    # What the dead worker finished is kept, not streamed again; what it was cutting is streamed once more.
    assert all(_streams(qdrant_cluster, "docs", s) == 1 for s in copied_before)
    assert all(_streams(qdrant_cluster, "docs", s) == 2 for s in cut)
    # One backup: the shards and the manifest, no partial file of the killed streams.
    assert sorted(p.name for p in files_under(root)) == sorted(
        [Path(s["key"]).name for s in manifest["shards"]] + ["manifest.json"])
    assert qdrant_cluster.snapshot_files_everywhere() == []
    # Every peer-stream slot is free again: the next set is not held up by the dead worker's streams.
    held = {key: redis_client.zcard(key) for key in redis_client.scan_iter(f"{engine_config.key_prefix}peer-streams:*")}
    assert not any(held.values()), held

    # And it restores whole.
    qdrant_cluster.drop_collection("docs")
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="docs",
                                           snapshot_name=done["snapshot_name"])["id"], worker=second)
    assert restored["status"] == "completed", restored
    assert qdrant_cluster.points_count("docs") == POINTS
