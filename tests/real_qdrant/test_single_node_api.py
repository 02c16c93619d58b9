"""QBM's cluster, collection, shard-layout and snapshot endpoints against a real single-node Qdrant: Qdrant's own
answers match the schemas of its OpenAPI spec, QBM's match QBM's document and say the same as Qdrant's."""

from __future__ import annotations

import pytest

from tests.real_qdrant import api_checks, data

pytestmark = pytest.mark.real_qdrant


def test_version_and_cluster_of_a_single_node(client, qdrant_node):
    version = qdrant_node.get("/")
    api_checks.validate(version, "VersionInfo")
    assert version["title"] == "qdrant - vector search engine" and version["version"]
    api_checks.check_cluster(client, qdrant_node, peers=1)


def test_collection_views_match_qdrant(client, qdrant_node, docs):
    api_checks.check_collection(client, qdrant_node, docs, shard_number=3, replication_factor=1,
                                points=data.POINTS)
    layout = api_checks.check_shard_layout(client, qdrant_node, docs, shard_number=3, replication_factor=1,
                                           peers=1)
    assert layout["remote_shards"] == [] and layout["shard_transfers"] == []
    assert sum(s["points_count"] for s in layout["local_shards"]) == data.POINTS


def test_snapshot_endpoints_match_qdrant(client, qdrant_node, docs):
    api_checks.check_snapshots(client, qdrant_node, docs, shard_id=1)


def test_unknown_collection_is_404_with_qdrants_message(client, qdrant_node):
    raw = qdrant_node.request("GET", "/collections/nope-never-made", expect=404).json()
    api_checks.validate(raw, "ErrorResponse")
    resp = client.get("/api/v1/collections/nope-never-made")
    assert resp.status_code == 404
    assert resp.get_json()["status"]["error"] == raw["status"]["error"]


def test_recover_endpoint_with_real_qdrant(client, qdrant_node, docs, tmp_path):
    snapshot = api_checks.qbm_answer(client, "POST", f"/collections/{docs}/snapshots")
    inside = f"file://{qdrant_node.snapshots_path}/{docs}/{snapshot['name']}"
    try:
        # From the node's own snapshots folder, and over HTTP from the node itself (its address is allowed by
        # default; Qdrant needs the key to download from itself).
        for copy, body in ((f"{docs}-file", {"location": inside}),
                           (f"{docs}-http", {"location": f"{qdrant_node.url}/collections/{docs}/snapshots/"
                                                         f"{snapshot['name']}", "api_key": qdrant_node.api_key})):
            resp = client.put(f"/api/v1/collections/{copy}/snapshots/recover", json=body)
            assert resp.status_code == 200 and resp.get_json()["result"] is True, resp.get_json()
            assert data.exact_count(qdrant_node, copy) == data.POINTS

        # A file outside the snapshots folder: Qdrant refuses (403), QBM says so as a 422 naming the field.
        outside = tmp_path / "elsewhere.snapshot"
        outside.write_bytes(b"not a snapshot")
        resp = client.put(f"/api/v1/collections/{docs}-x/snapshots/recover", json={"location": f"file://{outside}"})
        assert resp.status_code == 422
        message = resp.get_json()["status"]["error"]
        assert message.startswith("location: Qdrant refused to read it") and "inside the snapshots directory" in message

        # A checksum that does not match: Qdrant's 400 and message come through; nothing is created.
        resp = client.put(f"/api/v1/collections/{docs}-y/snapshots/recover",
                          json={"location": inside, "checksum": "0" * 64})
        assert resp.status_code == 400 and "checksum mismatch" in resp.get_json()["status"]["error"]
        assert not data.collection_exists(qdrant_node, f"{docs}-y")
    finally:
        client.delete(f"/api/v1/collections/{docs}/snapshots/{snapshot['name']}")
