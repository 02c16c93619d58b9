"""Backup sets of a distributed collection, against the Qdrant double's 3-peer mode, through the API and a real
worker process: each shard streamed from one Active replica, the set's manifest written last, nothing left on the
nodes; restored whole; a replica that fails mid-stream replaced by another; transfers make the set wait."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.domain.manifest import manifest_key, set_digest
from tests.engine.conftest import WorkerProcess, make_engine_config, wait_for_job, worker_env_for
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend
from tests.files import files_under
from tests.waiting import wait_until

SHARDS, REPLICAS, POINTS = 6, 2, 600
MiB = 1024 * 1024


@pytest.fixture
def engine_config(redis_url, key_prefix, qdrant_cluster, tmp_path: Path, secret_key):  # noqa: ANN001, ANN201
    """QBM talks to the first peer and reaches the others through QBM_QDRANT_PEERS (they all share one host)."""
    peers = tuple((str(pid), url) for pid, url in qdrant_cluster.rest_urls.items())
    return make_engine_config(redis_url, key_prefix, qdrant_cluster.url, tmp_path, secret_key, qdrant_peers=peers,
                              set_wait_seconds=20)


@pytest.fixture
def docs(qdrant_cluster) -> str:  # noqa: ANN001
    qdrant_cluster.create_collection("docs", points=POINTS, size_bytes=3 * MiB, shard_number=SHARDS,
                                     replication_factor=REPLICAS)
    return "docs"


def _manifest(app, storage_id: str, collection: str, backup_id: str) -> dict:  # noqa: ANN001
    return json.loads(storage_backend(app, storage_id).read_bytes(manifest_key(collection, backup_id)))


def _rewrite_manifest(engine_config, collection: str, backup_id: str, manifest: dict) -> None:  # noqa: ANN001
    """Replace a local backup's manifest with ``manifest`` (a test's doctored copy)."""
    path = engine_config.storage_roots[0] / "backups" / manifest_key(collection, backup_id)
    path.write_text(json.dumps(manifest))


@contextmanager
def _single_node_worker(engine_config, qdrant, tmp_path: Path) -> Iterator[WorkerProcess]:  # noqa: ANN001
    """A worker of the single-node double ``qdrant`` (same Redis, storage and keys), stopped on the way out."""
    single = WorkerProcess(worker_env_for(dataclasses.replace(engine_config, qdrant_url=qdrant.url, qdrant_peers=())),
                           tmp_path / "single-worker.log").start()
    try:
        yield single
    finally:
        single.stop()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_distributed_collection_is_backed_up_as_a_set_and_restored_whole(
        request, app, client, jobs, worker, qdrant_cluster, docs, engine_config, kind):  # noqa: ANN001
    if kind == "local":
        storage = register_storage(client, "local", engine_config)
    else:
        storage = register_storage(client, "s3", engine_config, request.getfixturevalue("s3_server"),
                                   request.getfixturevalue("s3_bucket"))
    job = post_job(client, type="backup", collection_name=docs)
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "completed", (done, worker.log()[-3000:])
    assert done["progress"] == 100 and done["metadata"]["kind"] == "set" and done["metadata"]["shards"] == SHARDS

    manifest = _manifest(app, storage["id"], docs, done["snapshot_name"])
    assert manifest["kind"] == "set" and manifest["points_count"] == POINTS
    assert sorted(s["shard_id"] for s in manifest["shards"]) == list(range(SHARDS))
    backend = storage_backend(app, storage["id"])
    for shard in manifest["shards"]:
        assert sha256_of(backend, shard["key"]) == shard["sha256"]
        # Each shard came from a peer that holds a replica of it.
        assert shard["peer_id"] in qdrant_cluster.replicas(docs)[shard["shard_id"]]
    assert manifest["sha256"] == set_digest(manifest["shards"])
    assert manifest["size"] == sum(s["size"] for s in manifest["shards"])
    assert len({s["peer_id"] for s in manifest["shards"]}) == 3  # the streams were spread over the peers
    assert manifest["collection_config"]["params"]["shard_number"] == SHARDS
    assert qdrant_cluster.snapshot_files_everywhere() == []  # nothing staged or left on any node
    listed = client.get(f"/api/v1/backups?storage_id={storage['id']}&collection={docs}").get_json()["result"]
    assert [(b["backup_id"], b["kind"], len(b["shards"])) for b in listed["items"]] == [
        (done["snapshot_name"], "set", SHARDS)]

    qdrant_cluster.drop_collection(docs)
    job = post_job(client, type="restore", collection_name=docs, snapshot_name=done["snapshot_name"])
    restored = wait_for_job(jobs, job["id"], worker=worker)
    assert restored["status"] == "completed", (restored, worker.log()[-3000:])
    assert restored["metadata"]["restored_points"] == POINTS
    assert restored["metadata"]["shard_counts_checked"] == SHARDS  # each shard's count, not only the total
    assert qdrant_cluster.points_count(docs) == POINTS
    assert all(state == "Active" for replicas in qdrant_cluster.replicas(docs).values()
               for state in replicas.values())
    assert all(len(replicas) == REPLICAS for replicas in qdrant_cluster.replicas(docs).values())
    assert qdrant_cluster.snapshot_files_everywhere() == []  # the uploads were removed after recovery


def test_a_set_restores_under_a_new_name_with_its_indexes_and_aliases(app, client, jobs, worker, qdrant_cluster,
                                                                      docs, engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    peer = qdrant_cluster.peers[1]
    import requests

    requests.put(f"{peer.url}/collections/{docs}/index", params={"wait": "true"},
                 json={"field_name": "group", "field_schema": "keyword"}, timeout=10).raise_for_status()
    requests.post(f"{peer.url}/collections/aliases", timeout=10,
                  json={"actions": [{"create_alias": {"collection_name": docs, "alias_name": "live"}}]}
                  ).raise_for_status()
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name=docs)["id"], worker=worker)
    assert done["status"] == "completed", done
    job = post_job(client, type="restore", collection_name=docs, snapshot_name=done["snapshot_name"],
                   metadata={"target_collection": "docs-copy", "restore_aliases": True})
    restored = wait_for_job(jobs, job["id"], worker=worker)
    assert restored["status"] == "completed", (restored, worker.log()[-3000:])
    assert qdrant_cluster.points_count("docs-copy") == POINTS and qdrant_cluster.points_count(docs) == POINTS
    assert "group" in qdrant_cluster.payload_indexes("docs-copy")
    assert qdrant_cluster.aliases()["live"] == "docs-copy"


def test_a_replica_that_fails_mid_stream_is_replaced_by_another(app, client, jobs, worker, qdrant_cluster, docs,
                                                                engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    broken = qdrant_cluster.peers[1]
    broken.faults.cut_after(64 * 1024, times=None)  # every stream from this peer breaks off
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name=docs)["id"], worker=worker)
    assert done["status"] == "completed", (done, worker.log()[-3000:])
    manifest = _manifest(app, storage["id"], docs, done["snapshot_name"])
    assert broken.peer_id not in {s["peer_id"] for s in manifest["shards"]}
    assert "trying another replica" in worker.log()


def test_a_peer_that_stops_answering_mid_set_is_replaced_by_another(app, client, jobs, worker, qdrant_cluster,
                                                                    docs, engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    victim = qdrant_cluster.peers[2]
    victim.faults.throttle(256 * 1024)  # its streams take long enough to be cut by the kill
    job = post_job(client, type="backup", collection_name=docs)
    wait_until(lambda: any(r.path.endswith("/snapshot") for r in victim.requests_log), timeout=30,
               what="a shard stream from the victim peer")
    qdrant_cluster.kill(victim.peer_id)
    done = wait_for_job(jobs, job["id"], worker=worker, timeout=120)
    assert done["status"] == "completed", (done, worker.log()[-3000:])
    manifest = _manifest(app, storage["id"], docs, done["snapshot_name"])
    assert victim.peer_id not in {s["peer_id"] for s in manifest["shards"]}
    assert sorted(s["shard_id"] for s in manifest["shards"]) == list(range(SHARDS))


def test_a_set_waits_while_shards_move_and_says_why(client, jobs, worker, qdrant_cluster, docs,
                                                    engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant_cluster.start_transfer(docs, 1, qdrant_cluster.peer_ids[1], qdrant_cluster.peer_ids[0])
    job = post_job(client, type="backup", collection_name=docs)
    waiting = wait_until(lambda: jobs.get(job["id"]).metadata.get("waiting"), timeout=30,
                         what="the job to say why it waits")
    assert "shard transfers in progress (shard 1 from peer" in waiting
    assert jobs.get(job["id"]).status == "pending"
    qdrant_cluster.finish_transfers(docs)
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "completed", done
    assert done["metadata"].get("waiting") is None


def test_a_set_that_waited_too_long_fails_with_the_reason(client, jobs, worker, qdrant_cluster, docs,
                                                          engine_config):  # noqa: ANN001
    register_storage(client, "local", engine_config)
    qdrant_cluster.start_transfer(docs, 1, qdrant_cluster.peer_ids[1], qdrant_cluster.peer_ids[0])
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name=docs)["id"], worker=worker,
                        timeout=90)
    assert done["status"] == "failed"
    assert done["error"].startswith(f"collection {docs!r} has shard transfers in progress (shard 1 from peer")
    assert "gave up after waiting" in done["error"]


def test_a_shard_without_an_active_replica_fails_the_set_naming_it(client, jobs, worker, qdrant_cluster, docs,
                                                                   engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    for peer_id in qdrant_cluster.replicas(docs)[4]:
        qdrant_cluster.set_replica_state(docs, 4, peer_id, "Dead")
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name=docs)["id"], worker=worker)
    assert done["status"] == "failed"
    assert done["error"].startswith(f"shard 4 of collection {docs!r} has no Active replica to copy from (peer ")
    assert client.get(f"/api/v1/backups?storage_id={storage['id']}").get_json()["result"]["items"] == []


def test_the_api_shows_every_replica_and_every_peer(client, qdrant_cluster, docs):  # noqa: ANN001
    layout = client.get(f"/api/v1/collections/{docs}/cluster").get_json()["result"]
    assert {s["shard_id"]: {r["peer_id"] for r in s["replicas"]} for s in layout["shards"]} == {
        sid: set(replicas) for sid, replicas in qdrant_cluster.replicas(docs).items()}
    members = client.get("/api/v1/cluster").get_json()["result"]["members"]
    assert {m["peer_id"]: (m["rest_url"], m["reachable"]) for m in members} == {
        pid: (url, True) for pid, url in qdrant_cluster.rest_urls.items()}


def test_a_cancelled_set_stops_and_leaves_nothing_behind(app, client, jobs, worker, qdrant_cluster, docs,
                                                         engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    for peer in qdrant_cluster.peers:
        peer.faults.throttle(128 * 1024)  # every shard stream takes seconds
    job = post_job(client, type="backup", collection_name=docs)
    wait_until(lambda: any(r.path.endswith("/snapshot") for p in qdrant_cluster.peers for r in p.requests_log),
               timeout=30, what="the first shard stream")
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    done = wait_for_job(jobs, job["id"], worker=worker)
    assert done["status"] == "cancelled"
    folder = Path(storage["path"]) / docs

    # No shard file, no temp file, no manifest: the cancelled set left nothing in storage or on the nodes.
    wait_until(lambda: not files_under(folder), timeout=30, what="the set's files to be removed",
               details=lambda: str(files_under(folder)))
    assert qdrant_cluster.snapshot_files_everywhere() == []


def test_shard_jobs_go_to_a_peer_that_holds_the_shard(app, client, jobs, worker, qdrant_cluster, docs,
                                                      engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    first = qdrant_cluster.peers[0]
    shard = next(s for s, replicas in qdrant_cluster.replicas(docs).items() if first.peer_id not in replicas)
    holders = {qdrant_cluster.rest_urls[p] for p in qdrant_cluster.replicas(docs)[shard]}
    done = wait_for_job(jobs, post_job(client, type="shard_backup", collection_name=docs, shard_id=shard)["id"],
                        worker=worker)
    assert done["status"] == "completed", (done, worker.log()[-3000:])
    assert done["metadata"]["peer_url"] in holders
    manifest = _manifest(app, storage["id"], docs, done["snapshot_name"])
    assert manifest["shard_id"] == shard and manifest["points_count"] == qdrant_cluster.shard_points(docs, shard)
    assert qdrant_cluster.snapshot_files_everywhere() == []  # the shard snapshot was freed on its peer

    job = post_job(client, type="shard_restore", collection_name=docs, shard_id=shard,
                   snapshot_name=done["snapshot_name"])
    restored = wait_for_job(jobs, job["id"], worker=worker)
    assert restored["status"] == "completed", (restored, worker.log()[-3000:])
    assert restored["metadata"]["peer_url"] in holders
    assert restored["metadata"]["restored_points"] == qdrant_cluster.shard_points(docs, shard)


def test_peers_on_their_own_hosts_need_no_peer_map(tmp_path, redis_url, key_prefix, secret_key):  # noqa: ANN001
    """The default rule: a peer's REST URL is its p2p URI's host with QBM_QDRANT_URL's port (one Qdrant per host)."""
    from api.app import create_app
    from tests.qdrant_double import DoubleCluster

    with DoubleCluster(tmp_path / "hosts", peers=3, distinct_hosts=True) as cluster:
        cluster.create_collection("docs", points=60, shard_number=3, replication_factor=1)
        config = make_engine_config(redis_url, key_prefix, cluster.url, tmp_path, secret_key)  # no QBM_QDRANT_PEERS
        client = create_app(config).test_client()
        members = client.get("/api/v1/cluster").get_json()["result"]["members"]
        assert {m["peer_id"]: (m["rest_url"], m["reachable"]) for m in members} == {
            pid: (url, True) for pid, url in cluster.rest_urls.items()}
        assert len({m["rest_url"] for m in members}) == 3


def test_a_restored_shard_whose_count_differs_from_the_set_fails_the_restore_naming_it(
        app, client, jobs, worker, qdrant_cluster, docs, engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name=docs)["id"], worker=worker)
    assert done["status"] == "completed", done
    manifest = _manifest(app, storage["id"], docs, done["snapshot_name"])
    assert manifest["topology"]["shard_counts_exact"] is True
    assert sum(s["points_count"] for s in manifest["shards"]) == POINTS
    # The set says shard 2 had one point more than its file holds (as if the file were of another moment).
    manifest["shards"][2]["points_count"] += 1
    _rewrite_manifest(engine_config, docs, done["snapshot_name"], manifest)
    qdrant_cluster.drop_collection(docs)
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name=docs,
                                           snapshot_name=done["snapshot_name"])["id"], worker=worker)
    shard = manifest["shards"][2]
    assert restored["status"] == "failed"
    assert (f"shard {shard['shard_id']}: {shard['points_count'] - 1} points, the set had {shard['points_count']}"
            in restored["error"]), restored["error"]


def test_a_set_restores_into_a_single_node_qdrant(app, client, jobs, worker, qdrant_cluster, docs, engine_config,
                                                  qdrant, tmp_path):  # noqa: ANN001
    """A cluster's set restored into one node (a copy of production on a laptop): that node holds every shard."""
    register_storage(client, "local", engine_config)
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name=docs)["id"], worker=worker)
    assert done["status"] == "completed", done
    worker.stop()  # the restore must be run by a worker of the single node
    with _single_node_worker(engine_config, qdrant, tmp_path) as single:
        job = post_job(client, type="restore", collection_name=docs, snapshot_name=done["snapshot_name"],
                       metadata={"target_collection": "docs-single"})
        restored = wait_for_job(jobs, job["id"], worker=single)
        assert restored["status"] == "completed", (restored, single.log()[-3000:])
    assert qdrant.points_count("docs-single") == POINTS == restored["metadata"]["restored_points"]
    assert restored["metadata"]["shard_counts_checked"] == SHARDS
    assert qdrant.snapshot_files("docs-single") == []  # the uploaded shard files were removed


def test_a_custom_sharded_set_restores_its_shard_keys_and_checks_each_keys_count(
        app, client, jobs, worker, qdrant_cluster, engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    ids = qdrant_cluster.create_custom_sharded("keyed", {"tenant-a": 300, 7: 120}, shards_per_key=2,
                                               replication_factor=2, size_bytes=2 * MiB)
    keys_before = qdrant_cluster.shard_keys("keyed")
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="keyed")["id"], worker=worker)
    assert done["status"] == "completed", (done, worker.log()[-3000:])
    manifest = _manifest(app, storage["id"], "keyed", done["snapshot_name"])
    assert [(k["key"], k["shards"], k["points_count"]) for k in manifest["topology"]["shard_keys"]] == [
        ("tenant-a", ids["tenant-a"], 300), (7, ids[7], 120)]
    assert {s["shard_id"]: s["shard_key"] for s in manifest["shards"]} == keys_before

    qdrant_cluster.drop_collection("keyed")
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="keyed",
                                           snapshot_name=done["snapshot_name"])["id"], worker=worker)
    assert restored["status"] == "completed", (restored, worker.log()[-3000:])
    assert restored["metadata"]["shard_keys_checked"] == 2
    assert qdrant_cluster.shard_keys("keyed") == keys_before  # the same keys on the same shard ids
    assert qdrant_cluster.key_points("keyed", "tenant-a") == 300 and qdrant_cluster.key_points("keyed", 7) == 120
    assert qdrant_cluster.snapshot_files_everywhere() == []


def test_a_custom_sharded_set_whose_key_count_differs_fails_the_restore_naming_the_key(
        app, client, jobs, worker, qdrant_cluster, engine_config):  # noqa: ANN001
    storage = register_storage(client, "local", engine_config)
    qdrant_cluster.create_custom_sharded("keyed", {"tenant-a": 300, 7: 120}, shards_per_key=1, replication_factor=2)
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="keyed")["id"], worker=worker)
    assert done["status"] == "completed", done
    manifest = _manifest(app, storage["id"], "keyed", done["snapshot_name"])
    manifest["topology"]["shard_keys"][1]["points_count"] = 121  # as if key 7 had one point more than its shard
    _rewrite_manifest(engine_config, "keyed", done["snapshot_name"], manifest)
    qdrant_cluster.drop_collection("keyed")
    restored = wait_for_job(jobs, post_job(client, type="restore", collection_name="keyed",
                                           snapshot_name=done["snapshot_name"])["id"], worker=worker)
    assert restored["status"] == "failed"
    assert "shard key 7: 120 points, the set had 121" in restored["error"], restored["error"]


def test_a_custom_sharded_set_is_refused_by_a_single_node_before_its_collection_is_touched(
        app, client, jobs, worker, qdrant_cluster, engine_config, qdrant, tmp_path):  # noqa: ANN001
    """Qdrant makes shard keys only in distributed mode: the restore says so, and a collection it was asked to
    replace is still there."""
    register_storage(client, "local", engine_config)
    qdrant_cluster.create_custom_sharded("keyed", {"tenant-a": 30}, shards_per_key=1, replication_factor=2)
    done = wait_for_job(jobs, post_job(client, type="backup", collection_name="keyed")["id"], worker=worker)
    assert done["status"] == "completed", done
    worker.stop()
    qdrant.create_collection("keyed-copy", points=5)
    with _single_node_worker(engine_config, qdrant, tmp_path) as single:
        job = post_job(client, type="restore", collection_name="keyed", snapshot_name=done["snapshot_name"],
                       metadata={"target_collection": "keyed-copy", "replace": True})
        restored = wait_for_job(jobs, job["id"], worker=single)
    assert restored["status"] == "failed"
    assert "only in distributed mode" in restored["error"] and "restore it into a cluster" in restored["error"]
    assert qdrant.points_count("keyed-copy") == 5  # untouched
