"""GET /collections, /collections/{name}, /collections/{name}/cluster against the Qdrant double."""

from __future__ import annotations

import pytest

from tests.api.helpers import API, error_of, result_of


def test_list_collections_returns_names(client, qdrant):
    assert result_of(client.get(f"{API}/collections")) == []
    qdrant.create_collection("alpha")
    qdrant.create_collection("beta")
    assert sorted(result_of(client.get(f"{API}/collections"))) == ["alpha", "beta"]


def test_get_collection(client, qdrant):
    qdrant.create_collection("alpha", points=250, shard_number=2)
    resp = client.get(f"{API}/collections/alpha")
    assert resp.status_code == 200
    result = result_of(resp)
    assert result["name"] == "alpha"
    assert result["status"] == "green"
    assert result["points_count"] == 250
    assert result["vectors_count"] == result["indexed_vectors_count"]
    assert isinstance(result["segments_count"], int)
    config = result["config"]
    assert config["params"]["shard_number"] == 2
    assert config["params"]["replication_factor"] == 1
    for key in ("hnsw_config", "optimizer_config", "wal_config"):
        assert isinstance(config[key], dict), key


def test_get_unknown_collection_is_404_with_qdrants_message(client):
    resp = client.get(f"{API}/collections/nope")
    assert resp.status_code == 404
    assert "nope" in error_of(resp)


@pytest.mark.parametrize("name", ["bad%20name", "a%3Bb", "x" * 256, "..", "caf%C3%A9"])
def test_invalid_collection_name_is_422(client, qdrant, name):
    resp = client.get(f"{API}/collections/{name}")
    assert resp.status_code == 422
    assert error_of(resp).startswith("name:")
    assert not any(path.startswith("/collections/") for _, path in qdrant.requests_seen)


def test_collection_cluster(client, qdrant):
    qdrant.create_collection("alpha", points=100, shard_number=3)
    result = result_of(client.get(f"{API}/collections/alpha/cluster"))
    assert result["peer_id"] == qdrant.peer_id
    assert result["shard_count"] == 3
    assert sorted(s["shard_id"] for s in result["local_shards"]) == [0, 1, 2]
    assert all(s["state"] == "Active" for s in result["local_shards"])
    assert sum(s["points_count"] for s in result["local_shards"]) == 100
    assert result["remote_shards"] == []


def test_collection_cluster_remote_shards_and_states(client, qdrant):
    qdrant.create_collection("alpha", shard_number=2)
    qdrant.set_shard_state("alpha", 1, "Dead")
    qdrant.remote_shards["alpha"] = [{"shard_id": 0, "peer_id": 222, "state": "Active"}]
    result = result_of(client.get(f"{API}/collections/alpha/cluster"))
    states = {s["shard_id"]: s["state"] for s in result["local_shards"]}
    assert states[1] == "Dead"
    assert result["remote_shards"] == [{"shard_id": 0, "peer_id": 222, "state": "Active"}]


def test_collection_cluster_unknown_is_404(client):
    assert client.get(f"{API}/collections/nope/cluster").status_code == 404


def test_collection_cluster_invalid_name_is_422(client):
    assert client.get(f"{API}/collections/a%20b/cluster").status_code == 422


@pytest.mark.parametrize("path", ["/collections", "/collections/alpha", "/collections/alpha/cluster"])
def test_qdrant_down_is_503(offline_client, path):
    resp = offline_client.get(f"{API}{path}")
    assert resp.status_code == 503
    assert "Qdrant" in error_of(resp)


def test_unmapped_qdrant_error_is_502_naming_status_and_message(client, qdrant):
    qdrant.create_collection("alpha")
    qdrant.faults.fail_next(1, status=500, path_contains="/collections/alpha")
    resp = client.get(f"{API}/collections/alpha")
    assert resp.status_code == 502
    assert error_of(resp) == "Qdrant answered 500: Service internal error: injected fault (test double)"


def test_plain_text_qdrant_error_is_502(client, qdrant):
    qdrant.create_collection("alpha")
    qdrant.faults.fail_next(1, status=403, path_contains="/collections/alpha", plain_text=True)
    resp = client.get(f"{API}/collections/alpha")
    assert resp.status_code == 502
    assert error_of(resp) == "Qdrant answered 403: Service internal error: injected fault (test double)"


def test_qdrant_400_passes_through(client, qdrant):
    qdrant.create_collection("alpha")
    qdrant.faults.fail_next(1, status=400, path_contains="/collections/alpha")
    resp = client.get(f"{API}/collections/alpha")
    assert resp.status_code == 400
    assert error_of(resp) == "Service internal error: injected fault (test double)"  # Qdrant's own words
