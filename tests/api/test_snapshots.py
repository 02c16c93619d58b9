"""Collection and shard snapshots: list, create, delete, download, recover (Qdrant double over HTTP)."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest

from tests.api.helpers import API, error_of, result_of

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def alpha(qdrant):
    qdrant.create_collection("alpha", points=50, size_bytes=200 * 1024, shard_number=2)
    return "alpha"


def _create(client, collection="alpha"):
    resp = client.post(f"{API}/collections/{collection}/snapshots")
    assert resp.status_code == 200, resp.get_json()
    return result_of(resp)


# --- list / create ------------------------------------------------------------------------------------


def test_create_and_list_snapshots(client, qdrant, alpha):
    assert result_of(client.get(f"{API}/collections/alpha/snapshots")) == []
    snapshot = _create(client)
    assert snapshot["name"].endswith(".snapshot")
    assert ISO_Z.match(snapshot["creation_time"]), snapshot
    assert snapshot["size"] > 0
    [path] = [p for p in qdrant.snapshot_files("alpha") if p.name == snapshot["name"]]
    assert snapshot["checksum"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result_of(client.get(f"{API}/collections/alpha/snapshots")) == [snapshot]


def test_snapshot_without_checksum_reports_null(client, qdrant, alpha):
    snapshot = _create(client)
    for path in qdrant.snapshot_files("alpha"):
        if path.name.endswith(".checksum"):
            path.unlink()
    [listed] = result_of(client.get(f"{API}/collections/alpha/snapshots"))
    assert listed["name"] == snapshot["name"]
    assert listed["checksum"] is None


def test_create_without_waiting_is_202_with_null_result(client, qdrant, alpha):
    resp = client.post(f"{API}/collections/alpha/snapshots?wait=false")
    assert resp.status_code == 202
    assert result_of(resp) is None
    assert qdrant.wait_for_background(10)
    assert len(result_of(client.get(f"{API}/collections/alpha/snapshots"))) == 1


def test_invalid_wait_is_422(client, alpha):
    resp = client.post(f"{API}/collections/alpha/snapshots?wait=maybe")
    assert resp.status_code == 422
    assert error_of(resp).startswith("wait:")


def test_snapshots_of_unknown_collection_are_404(client):
    assert client.get(f"{API}/collections/nope/snapshots").status_code == 404
    assert client.post(f"{API}/collections/nope/snapshots").status_code == 404


def test_snapshot_routes_check_the_collection_name(client, qdrant):
    assert client.get(f"{API}/collections/a%20b/snapshots").status_code == 422
    assert client.post(f"{API}/collections/a%20b/snapshots").status_code == 422
    assert client.delete(f"{API}/collections/a%20b/snapshots/x.snapshot").status_code == 422
    assert client.get(f"{API}/collections/a%20b/snapshots/x.snapshot/download").status_code == 422
    assert qdrant.requests_seen == []


# --- delete -------------------------------------------------------------------------------------------


def test_delete_snapshot(client, qdrant, alpha):
    name = _create(client)["name"]
    resp = client.delete(f"{API}/collections/alpha/snapshots/{name}")
    assert resp.status_code == 200
    assert result_of(resp) is True
    assert result_of(client.get(f"{API}/collections/alpha/snapshots")) == []


def test_delete_without_waiting_is_202(client, qdrant, alpha):
    name = _create(client)["name"]
    resp = client.delete(f"{API}/collections/alpha/snapshots/{name}?wait=false")
    assert resp.status_code == 202
    assert result_of(resp) is None
    assert qdrant.wait_for_background(10)
    assert result_of(client.get(f"{API}/collections/alpha/snapshots")) == []


def test_delete_unknown_snapshot_is_404(client, alpha):
    resp = client.delete(f"{API}/collections/alpha/snapshots/nope.snapshot")
    assert resp.status_code == 404
    assert "nope.snapshot" in error_of(resp)


@pytest.mark.parametrize("name", ["x.tar", "..snapshot", "a..b.snapshot", "a%5Cb.snapshot", "a%00.snapshot",
                                  ".snapshot"])
def test_invalid_snapshot_names_are_422(client, qdrant, alpha, name):
    resp = client.delete(f"{API}/collections/alpha/snapshots/{name}")
    assert resp.status_code == 422
    assert error_of(resp).startswith("snapshotName:")
    resp = client.get(f"{API}/collections/alpha/snapshots/{name}/download")
    assert resp.status_code == 422
    assert not any("/snapshots/" in path for _, path in qdrant.requests_seen)


def test_slash_in_snapshot_name_never_reaches_qdrant(client, qdrant, alpha):
    resp = client.get(f"{API}/collections/alpha/snapshots/..%2F..%2Fetc.snapshot/download")
    assert resp.status_code in (404, 422)
    assert not any("etc" in path for _, path in qdrant.requests_seen)


# --- download -----------------------------------------------------------------------------------------


def test_download_streams_the_file(client, qdrant, alpha):
    snapshot = _create(client)
    resp = client.get(f"{API}/collections/alpha/snapshots/{snapshot['name']}/download")
    assert resp.status_code == 200
    assert resp.is_streamed
    assert resp.mimetype == "application/octet-stream"
    assert snapshot["name"] in resp.headers["Content-Disposition"]
    data = resp.get_data()
    resp.close()
    assert int(resp.headers["Content-Length"]) == len(data) == snapshot["size"]
    assert hashlib.sha256(data).hexdigest() == snapshot["checksum"]


def test_download_unknown_snapshot_is_404(client, alpha):
    resp = client.get(f"{API}/collections/alpha/snapshots/nope.snapshot/download")
    assert resp.status_code == 404


# --- recover ------------------------------------------------------------------------------------------


def _snapshot_url(qdrant, name):
    [path] = [p for p in qdrant.snapshot_files("alpha") if p.name == name]
    return path.resolve().as_uri()


def test_recover_from_file_url(client, qdrant, alpha):
    snapshot = _create(client)
    resp = client.put(f"{API}/collections/restored/snapshots/recover",
                      json={"location": _snapshot_url(qdrant, snapshot["name"]), "priority": "snapshot"})
    assert resp.status_code == 200, resp.get_json()
    assert result_of(resp) is True
    assert qdrant.points_count("restored") == 50


def test_recover_without_waiting_is_202(client, qdrant, alpha):
    snapshot = _create(client)
    resp = client.put(f"{API}/collections/restored/snapshots/recover?wait=false",
                      json={"location": _snapshot_url(qdrant, snapshot["name"])})
    assert resp.status_code == 202
    assert result_of(resp) is None
    assert qdrant.wait_for_background(10)
    assert qdrant.points_count("restored") == 50


def test_recover_api_key_is_never_returned_or_logged(client, qdrant, alpha, caplog):
    secret = "recover-secret-key-93jd"
    caplog.set_level(logging.DEBUG)
    # Qdrant's own address is an allowed host; nothing is served there, so Qdrant's fetch fails.
    resp = client.put(f"{API}/collections/restored/snapshots/recover",
                      json={"location": f"{qdrant.url}/missing/x.snapshot", "api_key": secret})
    assert resp.status_code >= 400 and error_of(resp)
    [sent] = [r for r in qdrant.requests_log if r.path.endswith("/recover")]
    assert sent.json["api_key"] == secret  # handed to Qdrant, for Qdrant to send to the location
    assert secret not in resp.get_data(as_text=True)
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "location"),
        ({"location": "ftp://host/x.snapshot"}, "location"),
        ({"location": "/tmp/x.snapshot"}, "location"),
        ({"location": "file:///x.snapshot", "priority": "fast"}, "priority"),
        ({"location": "file:///x.snapshot", "checksum": "abc"}, "checksum"),
        ({"location": "file:///x.snapshot", "surprise": 1}, "surprise"),
        ({"location": 42}, "location"),
    ],
)
def test_recover_validation(client, qdrant, body, field):
    resp = client.put(f"{API}/collections/restored/snapshots/recover", json=body)
    assert resp.status_code == 422
    assert error_of(resp).startswith(f"{field}:")
    assert qdrant.requests_seen == []


def test_recover_malformed_json_is_400(client):
    resp = client.put(f"{API}/collections/restored/snapshots/recover", data="{nope",
                      content_type="application/json")
    assert resp.status_code == 400
    assert "JSON" in error_of(resp)


def test_recover_wrong_content_type_is_415(client):
    resp = client.put(f"{API}/collections/restored/snapshots/recover", data="location=x",
                      content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 415


def test_recover_body_must_be_an_object(client):
    resp = client.put(f"{API}/collections/restored/snapshots/recover", json=["file:///x.snapshot"])
    assert resp.status_code == 422
    assert "request body" in error_of(resp)


def test_recover_missing_file_is_qdrants_404(client, qdrant, alpha):
    location = (qdrant.snapshots_path / "alpha" / "missing.snapshot").as_uri()
    resp = client.put(f"{API}/collections/restored/snapshots/recover", json={"location": location})
    assert resp.status_code == 404
    assert error_of(resp) == "Not found: Snapshot file missing.snapshot not found"


def test_recover_outside_qdrants_snapshot_dir_is_422_with_qdrants_reason(client, tmp_path, alpha):
    """Qdrant refuses (403) file:// paths outside its snapshots directory; the caller gets a 422 naming
    location with Qdrant's own message, not a 502 that would look like a broken server."""
    outside = tmp_path / "elsewhere.snapshot"
    outside.write_bytes(b"x")
    resp = client.put(f"{API}/collections/restored/snapshots/recover", json={"location": outside.as_uri()})
    assert resp.status_code == 422
    message = error_of(resp)
    assert message.startswith("location:")
    assert "outside of the snapshots directory" in message


# --- shard snapshots ----------------------------------------------------------------------------------


def test_shard_snapshots(client, qdrant, alpha):
    assert result_of(client.get(f"{API}/collections/alpha/shards/1/snapshots")) == []
    resp = client.post(f"{API}/collections/alpha/shards/1/snapshots")
    assert resp.status_code == 200
    snapshot = result_of(resp)
    assert snapshot["name"].endswith(".snapshot")
    assert ISO_Z.match(snapshot["creation_time"])
    assert result_of(client.get(f"{API}/collections/alpha/shards/1/snapshots")) == [snapshot]
    assert result_of(client.get(f"{API}/collections/alpha/shards/0/snapshots")) == []


def test_shard_snapshot_without_waiting_is_202(client, qdrant, alpha):
    resp = client.post(f"{API}/collections/alpha/shards/0/snapshots?wait=false")
    assert resp.status_code == 202
    assert result_of(resp) is None
    [sent] = [r for r in qdrant.requests_log if r.method == "POST"]
    assert (sent.path, sent.query) == ("/collections/alpha/shards/0/snapshots", {"wait": "false"})
    assert qdrant.wait_for_background(10)
    assert len(result_of(client.get(f"{API}/collections/alpha/shards/0/snapshots"))) == 1


@pytest.mark.parametrize("shard", ["-1", "abc", "1.5", "4294967296", "99999999999", "%D9%A3"])
def test_invalid_shard_id_is_422(client, qdrant, alpha, shard):
    resp = client.get(f"{API}/collections/alpha/shards/{shard}/snapshots")
    assert resp.status_code == 422
    assert error_of(resp).startswith("shardId:")
    assert client.post(f"{API}/collections/alpha/shards/{shard}/snapshots").status_code == 422


def test_unknown_shard_is_404(client, alpha):
    assert client.get(f"{API}/collections/alpha/shards/7/snapshots").status_code == 404
    assert client.post(f"{API}/collections/alpha/shards/7/snapshots").status_code == 404


def test_shard_snapshots_of_unknown_collection_are_404(client):
    assert client.get(f"{API}/collections/nope/shards/0/snapshots").status_code == 404


# --- Qdrant down --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/collections/alpha/snapshots", None),
        ("POST", "/collections/alpha/snapshots", None),
        ("DELETE", "/collections/alpha/snapshots/x.snapshot", None),
        ("GET", "/collections/alpha/snapshots/x.snapshot/download", None),
        ("PUT", "/collections/alpha/snapshots/recover", {"location": "file:///x.snapshot"}),
        ("GET", "/collections/alpha/shards/0/snapshots", None),
        ("POST", "/collections/alpha/shards/0/snapshots", None),
    ],
)
def test_qdrant_down_is_503(offline_client, method, path, body):
    resp = offline_client.open(f"{API}{path}", method, json=body)
    assert resp.status_code == 503
    assert "Qdrant" in error_of(resp)


def test_recover_forwards_location_priority_checksum_and_api_key(client, qdrant, alpha):
    snapshot = _create(client)
    location = _snapshot_url(qdrant, snapshot["name"])
    resp = client.put(f"{API}/collections/restored/snapshots/recover",
                      json={"location": location, "priority": "replica", "checksum": snapshot["checksum"],
                            "api_key": "key-for-the-source-node"})
    assert resp.status_code == 200, resp.get_json()
    [sent] = [r for r in qdrant.requests_log if r.method == "PUT" and r.path.endswith("/snapshots/recover")]
    assert sent.path == "/collections/restored/snapshots/recover"
    assert sent.json == {"location": location, "priority": "replica", "checksum": snapshot["checksum"],
                         "api_key": "key-for-the-source-node"}


def test_recover_without_a_priority_sends_snapshot(client, qdrant, alpha):
    snapshot = _create(client)
    client.put(f"{API}/collections/restored/snapshots/recover",
               json={"location": _snapshot_url(qdrant, snapshot["name"])})
    [sent] = [r for r in qdrant.requests_log if r.path.endswith("/snapshots/recover")]
    assert sent.json["priority"] == "snapshot" and "checksum" not in sent.json


def test_shard_snapshot_can_be_downloaded_and_deleted_through_qbm(client, qdrant, alpha):
    snapshot = result_of(client.post(f"{API}/collections/alpha/shards/1/snapshots"))
    resp = client.get(f"{API}/collections/alpha/shards/1/snapshots/{snapshot['name']}/download")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/octet-stream"
    assert hashlib.sha256(resp.get_data()).hexdigest() == snapshot["checksum"]
    assert int(resp.headers["Content-Length"]) == snapshot["size"]

    deleted = client.delete(f"{API}/collections/alpha/shards/1/snapshots/{snapshot['name']}")
    assert deleted.status_code == 200 and result_of(deleted) is True
    assert result_of(client.get(f"{API}/collections/alpha/shards/1/snapshots")) == []
    assert qdrant.snapshot_files("alpha", shard_id=1) == []  # nothing left on the node

    again = client.delete(f"{API}/collections/alpha/shards/1/snapshots/{snapshot['name']}")
    assert again.status_code == 404 and snapshot["name"] in error_of(again)
    missing = client.get(f"{API}/collections/alpha/shards/1/snapshots/{snapshot['name']}/download")
    assert missing.status_code == 404


def test_shard_snapshot_delete_without_waiting_is_202(client, qdrant, alpha):
    snapshot = result_of(client.post(f"{API}/collections/alpha/shards/0/snapshots"))
    resp = client.delete(f"{API}/collections/alpha/shards/0/snapshots/{snapshot['name']}?wait=false")
    assert resp.status_code == 202 and result_of(resp) is None
    assert qdrant.wait_for_background(10)
    assert result_of(client.get(f"{API}/collections/alpha/shards/0/snapshots")) == []
