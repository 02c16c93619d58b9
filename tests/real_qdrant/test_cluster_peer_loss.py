"""A real Qdrant peer killed while a backup set streams from it: the set completes from the other replicas.

The cluster is the test's own (a peer is killed). QBM reaches the victim peer through a throttling proxy
(``QBM_QDRANT_PEERS`` maps its p2p URI to the proxy), so the victim's streams last long enough to be cut."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import wait_for_job
from tests.real_qdrant import data
from tests.real_qdrant.helpers import cluster_engine_config, post_job, register_storage, stored_manifest
from tests.real_qdrant.qdrant_process import QdrantCluster, QdrantNode
from tests.real_qdrant.throttle import ThrottledProxy
from tests.waiting import wait_until

pytestmark = pytest.mark.real_qdrant

SHARDS, REPLICAS = 6, 2


@pytest.fixture
def own_cluster(qdrant_bin: str, tmp_path: Path) -> Iterator[QdrantCluster]:
    cluster = QdrantCluster(qdrant_bin, tmp_path / "own").start()
    yield cluster
    cluster.remove()


@pytest.fixture
def victim_proxy(own_cluster: QdrantCluster) -> Iterator[ThrottledProxy]:
    proxy = ThrottledProxy("127.0.0.1", own_cluster.peers[2].http_port, rate=256 * 1024).start()
    yield proxy
    proxy.cut()


@pytest.fixture
def qbm_qdrant(own_cluster: QdrantCluster) -> QdrantNode:
    return own_cluster.peers[0]


@pytest.fixture
def engine_config(redis_url, key_prefix, own_cluster, victim_proxy, tmp_path, secret_key):  # noqa: ANN001, ANN201
    config = cluster_engine_config(own_cluster, redis_url, key_prefix, tmp_path, secret_key)
    victim = own_cluster.peers[2]
    peers = tuple((uri, victim_proxy.endpoint if uri == victim.p2p_uri else url) for uri, url in config.qdrant_peers)
    return config.__class__(**{**config.__dict__, "qdrant_peers": peers})


def test_a_peer_killed_mid_set_is_replaced_by_the_other_replicas(app, client, jobs, worker, own_cluster,
                                                                 victim_proxy, engine_config):
    first, victim = own_cluster.peers[0], own_cluster.peers[2]
    victim_id = victim.peer_id()
    data.create_collection(first, "docs", shard_number=SHARDS, replication_factor=REPLICAS)
    data.wait_replicas_active(own_cluster.peers, "docs")
    storage = register_storage(client, "local", engine_config)

    job = post_job(client, type="backup", collection_name="docs")
    wait_until(lambda: victim_proxy.bytes_sent() > 256 * 1024, timeout=120,
               what="a shard stream from the victim peer", details=lambda: worker.log()[-3000:])
    victim.signal_stop()
    victim.wait_stopped()

    done = wait_for_job(jobs, job["id"], worker=worker, timeout=300)
    assert done["status"] == "completed", (done, worker.log()[-4000:])
    manifest = stored_manifest(app, storage["id"], "docs", done["snapshot_name"])
    assert sorted(s["shard_id"] for s in manifest["shards"]) == list(range(SHARDS))
    # Shards the victim finished before it died stay in the set; the one it was streaming came from another peer.
    assert {s["peer_id"] for s in manifest["shards"]} - {victim_id}
    assert manifest["points_count"] == data.POINTS
    assert f"copy from peer {victim_id} failed, trying another replica" in worker.log()
