"""QBM against a real three-peer Qdrant cluster (distributed mode): its endpoints say what the peer it talks to
says, and a collection snapshot taken through one peer holds the data of that peer's shards only."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

import pytest

from tests.real_qdrant import api_checks, data
from tests.real_qdrant.helpers import register_storage, run_job, stored_manifest
from tests.real_qdrant.qdrant_process import QdrantCluster

pytestmark = pytest.mark.real_qdrant

SHARDS, REPLICAS = 6, 2


@pytest.fixture(scope="module")
def cluster_docs(qdrant_cluster: QdrantCluster) -> Iterator[str]:
    """20,000 points in 6 shards of 2 replicas over the 3 peers, every replica Active on every peer."""
    first = qdrant_cluster.peers[0]
    data.create_collection(first, "cluster-docs", shard_number=SHARDS, replication_factor=REPLICAS)
    data.wait_replicas_active(qdrant_cluster.peers, "cluster-docs")
    yield "cluster-docs"
    data.drop_collection(first, "cluster-docs")


def test_cluster_view_matches_every_peer(client, qdrant_cluster):
    peer = qdrant_cluster.peers[0]
    ours = api_checks.check_cluster(client, peer, peers=3)
    assert set(ours["peers"]) == {str(p.peer_id()) for p in qdrant_cluster.peers}
    assert set(ours["peers"].values()) == {f"{p.p2p_uri}/" for p in qdrant_cluster.peers}
    leaders = {api_checks.qdrant_answer(p, "GET", "/cluster", "ClusterStatusResponse")["raft_info"]["leader"]
               for p in qdrant_cluster.peers}
    assert leaders == {ours["raft_info"]["leader"]}


def test_collection_and_shard_layout_views_match_qdrant(client, qdrant_cluster, cluster_docs):
    peer = qdrant_cluster.peers[0]
    api_checks.check_collection(client, peer, cluster_docs, shard_number=SHARDS, replication_factor=REPLICAS,
                                points=data.POINTS)
    layout = api_checks.check_shard_layout(client, peer, cluster_docs, shard_number=SHARDS,
                                           replication_factor=REPLICAS, peers=3)
    assert layout["peer_id"] == peer.peer_id()
    others = {p.peer_id() for p in qdrant_cluster.peers[1:]}
    assert {s["peer_id"] for s in layout["remote_shards"]} == others
    # Each shard has its two replicas somewhere, and the peers' layouts agree.
    placement: dict[int, set[int]] = {}
    for p in qdrant_cluster.peers:
        info = p.result("GET", f"/collections/{cluster_docs}/cluster")
        for s in info["local_shards"]:
            placement.setdefault(s["shard_id"], set()).add(info["peer_id"])
    assert sorted(placement) == list(range(SHARDS)) and all(len(v) == REPLICAS for v in placement.values())
    assert data.exact_count(peer, cluster_docs) == data.POINTS


def test_snapshot_endpoints_match_qdrant_in_a_cluster(client, qdrant_cluster, cluster_docs):
    peer = qdrant_cluster.peers[0]
    local = [s["shard_id"] for s in peer.result("GET", f"/collections/{cluster_docs}/cluster")["local_shards"]]
    api_checks.check_snapshots(client, peer, cluster_docs, shard_id=local[0])
    # A shard that is not on this peer has no snapshots here, and Qdrant says why.
    remote = sorted(set(range(SHARDS)) - set(local))[0]
    resp = client.post(f"/api/v1/collections/{cluster_docs}/shards/{remote}/snapshots")
    raw = peer.request("POST", f"/collections/{cluster_docs}/shards/{remote}/snapshots", expect=None)
    assert resp.status_code == raw.status_code and resp.status_code >= 400, (resp.get_json(), raw.text)
    assert resp.get_json()["status"]["error"] == raw.json()["status"]["error"]


def test_a_collection_snapshot_from_one_peer_holds_only_that_peers_shards(client, qdrant_cluster, cluster_docs):
    """Why "cluster-aware backup sets" is an issue: a collection backup taken through one peer is not the whole
    collection; the data of the shards other peers hold is not in it."""
    peer = qdrant_cluster.peers[0]
    layout = peer.result("GET", f"/collections/{cluster_docs}/cluster")
    local = {s["shard_id"] for s in layout["local_shards"]}
    remote_only = set(range(SHARDS)) - local
    assert len(local) == 4 and len(remote_only) == 2

    created = api_checks.qbm_answer(client, "POST", f"/collections/{cluster_docs}/snapshots")
    try:
        resp = client.get(f"/api/v1/collections/{cluster_docs}/snapshots/{created['name']}/download")
        assert resp.status_code == 200
        body = resp.get_data()
        assert len(body) == created["size"]
    finally:
        client.delete(f"/api/v1/collections/{cluster_docs}/snapshots/{created['name']}")

    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
    assert {"config.json", "version.info"} <= set(names)
    by_shard: dict[int, set[str]] = {}
    for name in names:
        head, _, rest = name.partition("/")
        if head.isdigit() and rest:
            by_shard.setdefault(int(head), set()).add(rest)
    assert set(by_shard) == set(range(SHARDS))  # every shard has a folder ...
    for shard in local:  # ... the local ones with their segments and WAL ...
        assert any(f.startswith("segments/") for f in by_shard[shard]), (shard, sorted(by_shard[shard]))
    for shard in remote_only:  # ... the others with their replica state and config only
        assert by_shard[shard] <= {"replica_state.json", "shard_config.json"}, (shard, sorted(by_shard[shard]))


@pytest.mark.parametrize("where", ["local", "remote"])
def test_shard_backup_and_restore_on_the_peer_that_holds_the_shard(app, client, jobs, worker, qdrant_cluster,
                                                                    cluster_docs, engine_config, where):
    peer = qdrant_cluster.peers[0]
    storage = register_storage(client, "local", engine_config)
    layout = peer.result("GET", f"/collections/{cluster_docs}/cluster")
    local = {s["shard_id"] for s in layout["local_shards"]}
    # A shard the peer QBM talks to does not hold is backed up through a peer that does.
    shard = min(local) if where == "local" else min(set(range(SHARDS)) - local)
    counts = {s["shard_id"]: s["points_count"] for p in qdrant_cluster.peers
              for s in p.result("GET", f"/collections/{cluster_docs}/cluster")["local_shards"]}

    refused = client.post("/api/v1/jobs", json={"type": "shard_backup", "collection_name": cluster_docs,
                                                "shard_id": SHARDS})
    assert refused.status_code == 422
    assert refused.get_json()["status"]["error"] == (
        f"shard_id: collection {cluster_docs!r} has no shard {SHARDS} on any Qdrant peer (its shards: 0, 1, 2, 3, "
        "4, 5)")

    done = run_job(client, jobs, worker, type="shard_backup", collection_name=cluster_docs, shard_id=shard)
    manifest = stored_manifest(app, storage["id"], cluster_docs, done["snapshot_name"])
    assert manifest["points_count"] == counts[shard]
    holders = {qdrant_cluster.peers[i].url for i in range(3) if shard in {
        s["shard_id"] for s in qdrant_cluster.peers[i].result("GET", f"/collections/{cluster_docs}/cluster")[
            "local_shards"]}}
    assert done["metadata"].get("peer_url", peer.url) in holders

    done = run_job(client, jobs, worker, type="shard_restore", collection_name=cluster_docs, shard_id=shard,
                   snapshot_name=done["snapshot_name"])
    assert done["metadata"]["restored_points"] == counts[shard]
    # The other replica of the shard catches up from the restored one; the collection is whole on every peer.
    data.wait_replicas_active(qdrant_cluster.peers, cluster_docs, timeout=120)
    for p in qdrant_cluster.peers:
        assert data.exact_count(p, cluster_docs) == data.POINTS
        local = {s["shard_id"]: s["points_count"]
                 for s in p.result("GET", f"/collections/{cluster_docs}/cluster")["local_shards"]}
        if shard in local:
            assert local[shard] == counts[shard], p.name
