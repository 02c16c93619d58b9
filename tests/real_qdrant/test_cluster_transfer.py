"""A backup set waits while its collection has a shard transfer under way, says why, and starts once it ended.

The cluster is the test's own. Its third peer is known to the others by a p2p URI that goes through a throttling
proxy (both ways), so a shard replicated to it takes long enough to be seen in progress."""

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

SHARDS = 6


class _ProxiedPeer(QdrantNode):
    """A peer whose p2p URI (what it announces with ``--uri``) is a proxy in front of its real p2p port."""

    proxy: ThrottledProxy

    @property
    def p2p_uri(self) -> str:
        return self.proxy.endpoint


@pytest.fixture
def slow_cluster(qdrant_bin: str, tmp_path: Path) -> Iterator[QdrantCluster]:
    cluster = QdrantCluster(qdrant_bin, tmp_path / "own")
    slow = cluster.peers[2]
    slow.__class__ = _ProxiedPeer
    slow.proxy = ThrottledProxy("127.0.0.1", slow.p2p_port, both_ways=True).start()
    cluster.start()
    yield cluster
    cluster.remove()
    slow.proxy.cut()


@pytest.fixture
def qbm_qdrant(slow_cluster: QdrantCluster) -> QdrantNode:
    return slow_cluster.peers[0]


@pytest.fixture
def engine_config(redis_url, key_prefix, slow_cluster, tmp_path, secret_key):  # noqa: ANN001, ANN201
    return cluster_engine_config(slow_cluster, redis_url, key_prefix, tmp_path, secret_key)


def test_a_set_waits_while_a_shard_is_transferred_and_says_why(app, client, jobs, worker, slow_cluster,
                                                               engine_config):
    first, slow = slow_cluster.peers[0], slow_cluster.peers[2]
    data.create_collection(first, "docs", shard_number=SHARDS, replication_factor=1)
    storage = register_storage(client, "local", engine_config)
    layout = first.result("GET", "/collections/docs/cluster")
    shard = next(s["shard_id"] for s in layout["local_shards"])
    slow.proxy.throttle(64 * 1024)
    first.request("POST", "/collections/docs/cluster", json={"replicate_shard": {
        "shard_id": shard, "from_peer_id": first.peer_id(), "to_peer_id": slow.peer_id()}})

    job = post_job(client, type="backup", collection_name="docs")
    waiting = wait_until(lambda: jobs.get(job["id"]).metadata.get("waiting"), timeout=60,
                         what="the set to say why it waits", details=worker.log)
    assert waiting.startswith(f"collection 'docs' has shard transfers in progress (shard {shard} from peer "
                              f"{first.peer_id()} to peer {slow.peer_id()}")
    assert jobs.get(job["id"]).status == "pending"
    slow.proxy.throttle(None)  # let the transfer finish: the set starts by itself

    done = wait_for_job(jobs, job["id"], worker=worker, timeout=300)
    assert done["status"] == "completed", (done, worker.log()[-4000:])
    assert done["metadata"].get("waiting") is None
    manifest = stored_manifest(app, storage["id"], "docs", done["snapshot_name"])
    assert manifest["points_count"] == data.POINTS and len(manifest["shards"]) == SHARDS
