"""A custom-sharded collection (shard keys) on the real three-peer cluster: its backup set keeps every shard key
with its shards and exact count, and its restore makes the keys again, puts every stored shard into the new shard
of its key and checks each key's exact count; every point comes back with the key it was written under."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.real_qdrant import data
from tests.real_qdrant.helpers import register_storage, run_job, stored_manifest
from tests.real_qdrant.qdrant_process import QdrantCluster, QdrantNode

pytestmark = pytest.mark.real_qdrant

SET_TIMEOUT = 240.0
#: shard key -> (shards, points written under it). One string key and one integer key, as Qdrant allows both.
KEYS = {"tenant-a": (2, 3_000), 7: (1, 1_000)}


def key_of_shards(node: QdrantNode, collection: str) -> dict[int, object]:
    info = node.result("GET", f"/collections/{collection}/cluster")
    return {s["shard_id"]: s.get("shard_key") for s in info["local_shards"] + info["remote_shards"]}


def key_count(node: QdrantNode, collection: str, key: object) -> int:
    return int(node.result("POST", f"/collections/{collection}/points/count",
                           json={"exact": True, "shard_key": key})["count"])


@pytest.fixture
def keyed(qdrant_cluster: QdrantCluster) -> Iterator[str]:
    name = f"keyed-{uuid.uuid4().hex[:8]}"
    first = qdrant_cluster.peers[0]
    first.request("PUT", f"/collections/{name}?timeout=60", json={
        "vectors": {"size": data.DIM, "distance": "Cosine"}, "sharding_method": "custom",
        "shard_number": 1, "replication_factor": 2})
    points = data.make_points(sum(n for _, n in KEYS.values()))
    start = 0
    for key, (shards, count) in KEYS.items():
        first.request("PUT", f"/collections/{name}/shards?timeout=60", json={"shard_key": key, "shards_number": shards})
        for offset in range(start, start + count, data.BATCH):
            first.request("PUT", f"/collections/{name}/points?wait=true",
                          json={"points": list(points[offset:min(offset + data.BATCH, start + count)]),
                                "shard_key": key})
        start += count
    data.wait_replicas_active(qdrant_cluster.peers, name)
    yield name
    data.drop_collection(first, name)


def test_a_custom_sharded_set_restores_its_shard_keys_and_every_point(app, client, jobs, worker, qdrant_cluster,
                                                                      keyed, engine_config):
    first = qdrant_cluster.peers[0]
    storage = register_storage(client, "local", engine_config)
    before = data.scroll_all(first.url, first.api_key, keyed)
    keys_before = key_of_shards(first, keyed)
    groups = {json.dumps(key): sorted(s for s, k in keys_before.items() if k == key) for key in KEYS}
    assert [len(groups[json.dumps(key)]) for key in KEYS] == [shards for shards, _ in KEYS.values()]

    done = run_job(client, jobs, worker, type="backup", collection_name=keyed, timeout=SET_TIMEOUT)
    manifest = stored_manifest(app, storage["id"], keyed, done["snapshot_name"])
    assert manifest["kind"] == "set" and manifest["collection_config"]["params"]["sharding_method"] == "custom"
    assert [(k["key"], k["shards"], k["points_count"]) for k in manifest["topology"]["shard_keys"]] == [
        (key, groups[json.dumps(key)], count) for key, (_, count) in KEYS.items()]

    data.drop_collection(first, keyed)
    restored = run_job(client, jobs, worker, type="restore", collection_name=keyed,
                       snapshot_name=done["snapshot_name"], timeout=SET_TIMEOUT)
    assert restored["metadata"]["restored_points"] == len(before)
    assert restored["metadata"]["shard_keys_checked"] == len(KEYS)
    data.wait_replicas_active(qdrant_cluster.peers, keyed, timeout=120)
    assert key_of_shards(first, keyed) == keys_before
    for key, (_, count) in KEYS.items():
        assert key_count(first, keyed, key) == count
    assert data.differences(before, data.scroll_all(first.url, first.api_key, keyed)) == []
