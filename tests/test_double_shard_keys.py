"""The Qdrant double's multi-peer mode does custom sharding (shard keys) as Qdrant v1.18.3 does: a collection with
``sharding_method: custom`` starts without shards, ``PUT /collections/{c}/shards`` adds a key's shards numbered on
from the highest shard id (Qdrant's ``max_shard_id() + 1``: the first key gets 1..n), every peer's cluster info
names each shard's key, a count can be limited to keys, and shard snapshots and collection snapshots of keyed shards
keep working. Raw HTTP with ``requests``; errors are Qdrant's own messages (src/common/collections.rs,
lib/collection/src/shards/shard_holder/mod.rs)."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pytest
import requests

from tests.qdrant_double import DoubleCluster, QdrantDouble
from tests.test_qdrant_double import validate
from tests.waiting import wait_until

PEERS = [101, 102, 103]
#: ``create_custom_sharded("t", {"tenant-a": 300, 7: 120}, shards_per_key=2, replication_factor=2)`` on 3 peers:
#: replicas taken in turn from 101, 102, 103 over shard ids 1, 2, 3, 4.
KEYS = {1: "tenant-a", 2: "tenant-a", 3: 7, 4: 7}
PLACEMENT = {1: {101, 102}, 2: {103, 101}, 3: {102, 103}, 4: {101, 102}}


def call(url: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    """One request to a peer (a short timeout: the double answers at once)."""
    return requests.request(method, url + path, timeout=30, **kwargs)


def ok(resp: requests.Response) -> Any:
    """The ``result`` of a 200 answer."""
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def error(resp: requests.Response, status: int) -> str:
    """The message of a JSON error answer with ``status`` (shaped as Qdrant's ErrorResponse)."""
    assert resp.status_code == status, resp.text
    validate(resp.json(), "ErrorResponse")
    return resp.json()["status"]["error"]


def view(cluster: DoubleCluster, peer_id: int, name: str = "t") -> dict:
    """``GET /collections/{name}/cluster`` on one peer, checked against Qdrant's schema."""
    resp = call(cluster.rest_urls[peer_id], "GET", f"/collections/{name}/cluster")
    assert resp.status_code == 200, resp.text
    validate(resp.json(), "CollectionClusterInfoResponse")
    return resp.json()["result"]


def seen(info: dict) -> dict[int, dict]:
    """shard id -> {"peers": {peer ids}, "key": shard key or None} from one peer's cluster info."""
    shards: dict[int, dict] = {}
    for entry in info["local_shards"] + info["remote_shards"]:
        shard = shards.setdefault(entry["shard_id"], {"peers": set(), "key": entry.get("shard_key")})
        shard["peers"].add(entry.get("peer_id", info["peer_id"]))
        assert shard["key"] == entry.get("shard_key")  # every entry of a shard names the same key
    return shards


def count(cluster: DoubleCluster, body: dict, peer_id: int = 101, name: str = "t") -> requests.Response:
    return call(cluster.rest_urls[peer_id], "POST", f"/collections/{name}/points/count", json=body)


def create_key(cluster: DoubleCluster, body: Any, name: str = "t", peer_id: int = 101,
               **params: str) -> requests.Response:
    return call(cluster.rest_urls[peer_id], "PUT", f"/collections/{name}/shards", json=body, params=params)


def custom_collection(cluster: DoubleCluster, name: str = "t", **params: Any) -> None:
    body = {"vectors": {"size": 4, "distance": "Cosine"}, "sharding_method": "custom", **params}
    assert ok(call(cluster.url, "PUT", f"/collections/{name}", json=body)) is True


@pytest.fixture
def tenants(qdrant_cluster: DoubleCluster) -> str:
    assert qdrant_cluster.create_custom_sharded("t", {"tenant-a": 300, 7: 120}, shards_per_key=2,
                                                replication_factor=2, size_bytes=64 * 1024) == {
        "tenant-a": [1, 2], 7: [3, 4]}
    return "t"


# ----- 1. a custom-sharded collection ---------------------------------------------------------------------


def test_a_custom_sharded_collection_starts_without_shards(qdrant_cluster):
    custom_collection(qdrant_cluster, shard_number=2, replication_factor=2)
    for peer_id in PEERS:
        info = ok(call(qdrant_cluster.rest_urls[peer_id], "GET", "/collections/t"))
        validate({"result": info, "status": "ok", "time": 0.0}, "CollectionInfoResponse")
        params = info["config"]["params"]
        assert (params["sharding_method"], params["shard_number"], params["replication_factor"]) == ("custom", 2, 2)
        assert info["points_count"] == 0
        cluster_info = view(qdrant_cluster, peer_id)
        assert (cluster_info["shard_count"], cluster_info["local_shards"], cluster_info["remote_shards"]) == (0, [], [])
        assert ok(call(qdrant_cluster.rest_urls[peer_id], "GET", "/collections/t/shards")) == {"shard_keys": []}
    assert qdrant_cluster.replicas("t") == {} and qdrant_cluster.shard_keys("t") == {}
    assert ok(count(qdrant_cluster, {})) == {"count": 0}


# ----- 2. creating shard keys ------------------------------------------------------------------------------


def test_each_shard_key_gets_its_shards_numbered_on_from_the_highest_id(qdrant_cluster):
    custom_collection(qdrant_cluster, shard_number=2, replication_factor=2)
    first = create_key(qdrant_cluster, {"shard_key": "tenant-a"}, peer_id=102)
    assert first.status_code == 200, first.text
    validate(first.json(), "BoolResponse")
    assert first.json()["result"] is True and first.json()["status"] == "ok"
    assert ok(create_key(qdrant_cluster, {"shard_key": 7, "shards_number": 3}, peer_id=103)) is True

    expected_keys = {1: "tenant-a", 2: "tenant-a", 3: 7, 4: 7, 5: 7}
    for peer_id in PEERS:  # the layout is the cluster's: every peer sees every shard with its key
        shards = seen(view(qdrant_cluster, peer_id))
        assert {s: shard["key"] for s, shard in shards.items()} == expected_keys
        assert all(len(shard["peers"]) == 2 for shard in shards.values())
        assert view(qdrant_cluster, peer_id)["shard_count"] == 5
        assert ok(call(qdrant_cluster.rest_urls[peer_id], "GET", "/collections/t/shards")) == {
            "shard_keys": [{"key": "tenant-a"}, {"key": 7}]}
    assert all(state == "Active" for peers in qdrant_cluster.replicas("t").values() for state in peers.values())
    assert qdrant_cluster.shard_keys("t") == expected_keys
    assert ok(count(qdrant_cluster, {"shard_key": 7})) == {"count": 0}  # new shards are empty


def test_a_key_takes_its_replication_factor_and_placement(qdrant_cluster):
    custom_collection(qdrant_cluster, shard_number=1, replication_factor=3)
    assert ok(create_key(qdrant_cluster, {"shard_key": "everywhere"})) is True
    assert ok(create_key(qdrant_cluster, {"shard_key": "pinned", "shards_number": 2, "replication_factor": 2,
                                          "placement": [102, 103]})) is True
    assert ok(create_key(qdrant_cluster, {"shard_key": "alone", "replication_factor": 3,
                                          "placement": [101]})) is True  # capped at the placement's size
    # Shards made in a given state (Qdrant allows Active or Partial) get one replica unless told otherwise.
    assert ok(create_key(qdrant_cluster, {"shard_key": "filling", "initial_state": "Partial"})) is True
    assert {s: set(peers) for s, peers in qdrant_cluster.replicas("t").items()} == {
        1: {101, 102, 103}, 2: {102, 103}, 3: {102, 103}, 4: {101}, 5: {102}}
    assert qdrant_cluster.replicas("t")[5] == {102: "Partial"}


def test_wait_is_ignored_and_timeout_must_be_a_positive_integer(qdrant_cluster):
    custom_collection(qdrant_cluster)
    # Qdrant's WaitTimeout has only ``timeout``: an unknown ``wait`` is ignored, the key made all the same.
    assert ok(create_key(qdrant_cluster, {"shard_key": "a"}, wait="false", timeout="5")) is True
    assert ok(create_key(qdrant_cluster, {"shard_key": "b"}, wait="maybe")) is True
    assert error(create_key(qdrant_cluster, {"shard_key": "c"}, timeout="0"), 422) == (
        "Validation error in query parameters: [timeout: value 0 invalid, must be 1 or larger]")
    assert error(create_key(qdrant_cluster, {"shard_key": "c"}, timeout="soon"), 400) == (
        "Deserialize error in query parameters: invalid digit found in string")
    assert qdrant_cluster.shard_keys("t") == {1: "a", 2: "b"}  # custom sharding's default: 1 shard per key


def test_shard_key_errors_are_qdrants(qdrant_cluster):
    qdrant_cluster.create_collection("auto", points=10, shard_number=2)
    assert error(create_key(qdrant_cluster, {"shard_key": "a"}, name="auto"), 400) == (
        "Bad request: Shard Key cannot be created with Auto sharding method")
    assert error(create_key(qdrant_cluster, {"shard_key": "a"}, name="nope"), 404) == (
        "Not found: Collection `nope` doesn't exist!")

    custom_collection(qdrant_cluster)
    assert ok(create_key(qdrant_cluster, {"shard_key": "tenant-a"})) is True
    assert ok(create_key(qdrant_cluster, {"shard_key": 7})) is True
    assert error(create_key(qdrant_cluster, {"shard_key": "tenant-a"}, peer_id=103), 400) == (
        'Bad request: Sharding key "tenant-a" already exists for collection t')
    assert error(create_key(qdrant_cluster, {"shard_key": 7}), 400) == (
        "Bad request: Sharding key 7 already exists for collection t")
    assert error(create_key(qdrant_cluster, {"shard_key": "b", "placement": []}), 400) == (
        'Bad request: Sharding key "b" placement cannot be empty. If you want to use random placement, '
        "do not specify placement")
    assert error(create_key(qdrant_cluster, {"shard_key": "b", "placement": [101, 999]}), 400) == (
        "Bad request: Peer 999 does not exist")
    assert error(create_key(qdrant_cluster, {"shard_key": "b", "initial_state": "Dead"}), 400) == (
        "Bad request: Initial state cannot be Dead, only Active or Partial are allowed")
    assert qdrant_cluster.shard_keys("t") == {1: "tenant-a", 2: 7}  # nothing was made by the refused ones


@pytest.mark.parametrize("body", [{}, {"shard_key": 1.5}, {"shard_key": True}, {"shard_key": -1},
                                  {"shard_key": "a", "shards_number": 0}, {"shard_key": "a", "placement": ["101"]},
                                  {"shard_key": "a", "initial_state": "Sleepy"}])
def test_a_body_that_is_no_create_sharding_key_is_a_400(qdrant_cluster, body):
    custom_collection(qdrant_cluster)
    assert "deserialize error" in error(create_key(qdrant_cluster, body), 400)
    assert qdrant_cluster.shard_keys("t") == {}


def test_a_single_node_is_not_distributed_so_it_makes_no_shard_keys(qdrant: QdrantDouble):
    ok(call(qdrant.url, "PUT", "/collections/t", json={"vectors": {"size": 4, "distance": "Cosine"},
                                                       "sharding_method": "custom"}))
    resp = call(qdrant.url, "PUT", "/collections/t/shards", json={"shard_key": "a"})
    assert error(resp, 400) == "Bad request: Distributed mode disabled"
    assert ok(call(qdrant.url, "GET", "/collections/t/cluster"))["local_shards"] == []


# ----- 3. cluster info -------------------------------------------------------------------------------------


def test_every_peer_names_the_key_of_each_local_and_remote_shard(qdrant_cluster, tenants):
    for peer_id in PEERS:
        info = view(qdrant_cluster, peer_id)
        assert {s["shard_id"] for s in info["local_shards"]} == {s for s, p in PLACEMENT.items() if peer_id in p}
        assert all(entry["shard_key"] == KEYS[entry["shard_id"]]
                   for entry in info["local_shards"] + info["remote_shards"])
        assert {s: shard["peers"] for s, shard in seen(info).items()} == PLACEMENT


def test_shards_without_a_key_have_no_shard_key_field(qdrant_cluster):
    """Qdrant's LocalShardInfo / RemoteShardInfo skip ``shard_key`` when it is None (skip_serializing_if)."""
    qdrant_cluster.create_collection("auto", points=60, shard_number=3)
    for peer_id in PEERS:
        info = view(qdrant_cluster, peer_id, "auto")
        assert all("shard_key" not in entry for entry in info["local_shards"] + info["remote_shards"])
        assert ok(call(qdrant_cluster.rest_urls[peer_id], "GET", "/collections/auto/shards")) == {}


# ----- 4. counting by shard key -------------------------------------------------------------------------------


def test_a_count_by_shard_key_counts_only_that_keys_shards(qdrant_cluster, tenants):
    for peer_id in PEERS:
        assert ok(count(qdrant_cluster, {"shard_key": "tenant-a"}, peer_id)) == {"count": 300}
        assert ok(count(qdrant_cluster, {"shard_key": 7, "exact": True}, peer_id)) == {"count": 120}
        assert ok(count(qdrant_cluster, {"shard_key": ["tenant-a", 7]}, peer_id)) == {"count": 420}
        assert ok(count(qdrant_cluster, {}, peer_id)) == {"count": 420}
    assert ok(count(qdrant_cluster, {"shard_key": {"target": "tenant-a", "fallback": 7}})) == {"count": 300}
    assert ok(count(qdrant_cluster, {"shard_key": {"target": "gone", "fallback": 7}})) == {"count": 120}


def test_a_count_by_a_key_the_collection_lacks_is_qdrants_400(qdrant_cluster, tenants):
    assert error(count(qdrant_cluster, {"shard_key": "tenant-b"}), 400) == 'Bad request: Shard key "tenant-b" not found'
    assert error(count(qdrant_cluster, {"shard_key": "7"}), 400) == 'Bad request: Shard key "7" not found'
    assert error(count(qdrant_cluster, {"shard_key": [7, 8]}), 400) == "Bad request: Shard key 8 not found"
    assert error(count(qdrant_cluster, {"shard_key": {"target": "x", "fallback": "y"}}), 404) == (
        'Not found: Neither target shard key "x" nor fallback shard key "y" exist not found')
    assert error(count(qdrant_cluster, {"shard_key": "a"}, name="nope"), 404) == (
        "Not found: Collection `nope` doesn't exist!")


def test_a_count_by_shard_key_on_an_auto_sharded_collection_finds_no_key(qdrant_cluster):
    """Without custom sharding the key mapping is empty: Qdrant's select_shards answers 400 for any key."""
    qdrant_cluster.create_collection("auto", points=60, shard_number=3)
    assert error(count(qdrant_cluster, {"shard_key": "a"}, name="auto"), 400) == 'Bad request: Shard key "a" not found'
    assert error(count(qdrant_cluster, {"shard_key": 0}, name="auto"), 400) == "Bad request: Shard key 0 not found"
    assert ok(count(qdrant_cluster, {"shard_key": []}, name="auto")) == {"count": 0}  # no key, no shard
    assert ok(count(qdrant_cluster, {}, name="auto")) == {"count": 60}


def test_a_count_still_refuses_a_filter_and_malformed_selectors(qdrant_cluster, tenants):
    assert count(qdrant_cluster, {"filter": {"must": []}, "shard_key": 7}).status_code == 400
    for selector in (True, 1.5, {"target": "tenant-a"}, [["tenant-a"]]):
        assert "deserialize error" in error(count(qdrant_cluster, {"shard_key": selector}), 400)


# ----- 5. the test helpers -------------------------------------------------------------------------------------


def test_the_helpers_make_a_populated_custom_sharded_collection(qdrant_cluster, tenants):
    assert qdrant_cluster.shard_keys(tenants) == KEYS
    assert {s: set(peers) for s, peers in qdrant_cluster.replicas(tenants).items()} == PLACEMENT
    assert qdrant_cluster.key_points(tenants, "tenant-a") == 300 and qdrant_cluster.key_points(tenants, 7) == 120
    assert {s: qdrant_cluster.shard_points(tenants, s) for s in KEYS} == {1: 150, 2: 150, 3: 60, 4: 60}
    assert qdrant_cluster.points_count(tenants) == 420
    info = ok(call(qdrant_cluster.url, "GET", "/collections/t"))["config"]["params"]
    assert (info["sharding_method"], info["shard_number"], info["replication_factor"]) == ("custom", 2, 2)
    with pytest.raises(Exception, match="Shard key 8 not found"):
        qdrant_cluster.key_points(tenants, 8)


# ----- 6. shard snapshots of keyed shards ------------------------------------------------------------------------


def test_a_keyed_shard_streams_and_recovers_into_another_keys_shard_which_keeps_its_key(qdrant_cluster, tenants):
    """The key belongs to the shard id in the collection, not to the snapshot: shard 1 (tenant-a, 150 points)
    recovered into shard 3 (key 7) makes shard 3 hold 150 points, still under key 7."""
    archive = call(qdrant_cluster.rest_urls[101], "GET", "/collections/t/shards/1/snapshot")
    assert archive.status_code == 200 and "Content-Length" not in archive.headers
    qdrant_cluster.resync_gate.clear()  # hold the resync to see the other replica Dead first
    upload = call(qdrant_cluster.rest_urls[102], "POST", "/collections/t/shards/3/snapshots/upload",
                  params={"priority": "snapshot"}, files={"snapshot": ("s1.snapshot", archive.content)})
    assert ok(upload) is True
    assert qdrant_cluster.replicas(tenants)[3] == {102: "Active", 103: "Dead"}
    qdrant_cluster.resync_gate.set()
    assert qdrant_cluster.wait_for_resync(10)
    assert qdrant_cluster.replicas(tenants)[3] == {102: "Active", 103: "Active"}

    assert qdrant_cluster.shard_keys(tenants) == KEYS
    for peer_id in (102, 103):
        local = {s["shard_id"]: s for s in view(qdrant_cluster, peer_id)["local_shards"]}
        assert (local[3]["points_count"], local[3]["shard_key"]) == (150, 7)
    assert ok(count(qdrant_cluster, {"shard_key": 7}, 103)) == {"count": 150 + 60}
    assert ok(count(qdrant_cluster, {"shard_key": "tenant-a"}, 103)) == {"count": 300}


def test_a_keyed_shard_recovers_from_a_url_on_another_replica(qdrant_cluster, tenants):
    qdrant_cluster.create_custom_sharded("other", {"b": 900}, shards_per_key=1)
    location = f"{qdrant_cluster.rest_urls[101]}/collections/other/shards/1/snapshot"
    resp = call(qdrant_cluster.rest_urls[101], "PUT", "/collections/t/shards/2/snapshots/recover",
                json={"location": location, "priority": "snapshot"})
    assert ok(resp) is True
    wait_until(lambda: qdrant_cluster.replicas(tenants)[2] == {101: "Active", 103: "Active"}, 10,
               "the other replica of shard 2 to resync", details=lambda: str(qdrant_cluster.replicas(tenants)))
    local = {s["shard_id"]: s for s in view(qdrant_cluster, 103)["local_shards"]}
    assert (local[2]["points_count"], local[2]["shard_key"]) == (900, "tenant-a")
    assert qdrant_cluster.key_points(tenants, "tenant-a") == 150 + 900


# ----- 7. collection snapshots of custom-sharded collections -----------------------------------------------------


def test_a_collection_snapshot_holds_qdrants_shard_key_mapping_and_recovers(qdrant_cluster, tenants):
    made = ok(call(qdrant_cluster.rest_urls[101], "POST", "/collections/t/snapshots"))
    body = call(qdrant_cluster.rest_urls[101], "GET", f"/collections/t/snapshots/{made['name']}").content
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        member = tar.extractfile("shard_key_mapping.json")
        assert member is not None
        mapping = json.loads(member.read())
        shard_dirs = {name.partition("/")[0] for name in tar.getnames() if name.partition("/")[0].isdigit()}
    # Qdrant's persisted format (shard_mapping.rs, SerdeHelper): a list of {"key", "shard_ids"}.
    assert sorted(mapping, key=lambda e: e["shard_ids"]) == [{"key": "tenant-a", "shard_ids": [1, 2]},
                                                             {"key": 7, "shard_ids": [3, 4]}]
    assert shard_dirs == {"1", "2", "3", "4"}

    before = {s: qdrant_cluster.shard_points(tenants, s) for s in KEYS}
    upload = call(qdrant_cluster.rest_urls[101], "POST", "/collections/t/snapshots/upload",
                  params={"priority": "snapshot"}, files={"snapshot": ("t.snapshot", body)})
    assert ok(upload) is True
    assert qdrant_cluster.wait_for_resync(10)
    assert qdrant_cluster.shard_keys(tenants) == KEYS
    assert {s: qdrant_cluster.shard_points(tenants, s) for s in KEYS} == before
    assert all(state == "Active" for peers in qdrant_cluster.replicas(tenants).values() for state in peers.values())
    for peer_id in PEERS:
        assert {s: shard["key"] for s, shard in seen(view(qdrant_cluster, peer_id)).items()} == KEYS


def test_a_collection_snapshot_recovered_into_a_missing_collection_brings_its_config_but_no_shards(
        qdrant_cluster, tenants):
    """Qdrant creates the missing collection from the snapshot's config (custom sharding: no shards) and recovers
    only the shards the collection has (recover.rs loops over ``state.shards``): the keys must be made first."""
    made = ok(call(qdrant_cluster.rest_urls[101], "POST", "/collections/t/snapshots"))
    body = call(qdrant_cluster.rest_urls[101], "GET", f"/collections/t/snapshots/{made['name']}").content
    assert ok(call(qdrant_cluster.url, "DELETE", "/collections/t")) is True
    upload = call(qdrant_cluster.rest_urls[101], "POST", "/collections/t/snapshots/upload",
                  files={"snapshot": ("t.snapshot", body)})
    assert ok(upload) is True
    assert ok(call(qdrant_cluster.url, "GET", "/collections/t"))["config"]["params"]["sharding_method"] == "custom"
    assert qdrant_cluster.replicas(tenants) == {} and qdrant_cluster.shard_keys(tenants) == {}
    assert ok(count(qdrant_cluster, {})) == {"count": 0}
