"""The Qdrant double answers like Qdrant 1.19: shapes checked against Qdrant's own OpenAPI schemas,
behaviour checked against what Qdrant's source does (202 + background work, sidecars, file:// confinement,
uploads kept without sidecar, plain-text errors on downloads and auth, fault switches).

These tests talk raw HTTP with ``requests`` so they check the wire, not our client's interpretation.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from pathlib import Path

import jsonschema
import pytest
import requests

from tests.qdrant_double import QdrantDouble
from tests.waiting import wait_until

SCHEMAS = json.loads((Path(__file__).parent / "fixtures" / "qdrant_openapi_schemas.json").read_text())
PEER = 1234567890
SNAPSHOT_NAME = re.compile(r"^c-1234567890-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}\.snapshot$")
NAIVE_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def validate(instance: object, definition: str) -> None:
    """Validate against one definition of the extracted Qdrant schemas (raises ValidationError)."""
    schema = {"$schema": SCHEMAS["$schema"], "$defs": SCHEMAS["$defs"], "$ref": f"#/$defs/{definition}"}
    jsonschema.Draft202012Validator(schema).validate(instance)


def create_snapshot(qdrant: QdrantDouble, collection: str = "c") -> dict:
    resp = requests.post(f"{qdrant.url}/collections/{collection}/snapshots", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def download(qdrant: QdrantDouble, path: str) -> bytes:
    resp = requests.get(qdrant.url + path, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.content


# ----- schemas -------------------------------------------------------------------------------------------


def test_schema_fixture_names_its_source_and_rejects_wrong_shapes():
    assert "74f3e85b9473c62560006c043e13737ce6b48412" in SCHEMAS["$comment"]
    assert "Apache-2.0" in SCHEMAS["$comment"]
    # The schemas have teeth: these documents are what a wrong double would send.
    with pytest.raises(jsonschema.ValidationError):
        validate({"name": "x.snapshot", "size": "12"}, "SnapshotDescription")
    with pytest.raises(jsonschema.ValidationError):
        validate({"status": "enabled"}, "ClusterStatus")  # enabled needs peer_id, peers, raft_info...
    with pytest.raises(jsonschema.ValidationError):
        validate({"status": "green", "optimizer_status": "ok", "segments_count": 1, "payload_schema": {}},
                 "CollectionInfo")  # no config


def test_discovery_responses_match_qdrant_schemas(qdrant):
    qdrant.create_collection("c", points=42, shard_number=2)
    root = requests.get(qdrant.url + "/", timeout=5).json()
    validate(root, "VersionInfo")
    assert root["version"] == "1.19.0"
    validate(requests.get(qdrant.url + "/collections", timeout=5).json(), "CollectionsListResponse")

    info = requests.get(qdrant.url + "/collections/c", timeout=5).json()
    validate(info, "CollectionInfoResponse")
    result = info["result"]
    assert "vectors_count" not in result  # removed from CollectionInfo in Qdrant 1.13
    assert result["points_count"] == 42
    assert result["config"]["params"]["shard_number"] == 2
    assert result["config"]["params"]["replication_factor"] == 1
    assert result["config"]["params"]["vectors"] == {"size": 4, "distance": "Cosine"}
    assert {"hnsw_config", "optimizer_config", "wal_config"} <= set(result["config"])

    cluster = requests.get(qdrant.url + "/collections/c/cluster", timeout=5).json()
    validate(cluster, "CollectionClusterInfoResponse")
    shards = cluster["result"]["local_shards"]
    assert [s["shard_id"] for s in shards] == [0, 1]
    assert sum(s["points_count"] for s in shards) == 42
    assert {s["state"] for s in shards} == {"Active"}
    assert cluster["result"]["peer_id"] == PEER


def test_cluster_status_disabled_and_enabled(qdrant):
    disabled = requests.get(qdrant.url + "/cluster", timeout=5).json()
    validate(disabled, "ClusterStatusResponse")
    assert disabled["result"] == {"status": "disabled"}

    qdrant.enable_cluster({222: "http://10.0.0.2:6335/", 333: "http://10.0.0.3:6335/"}, leader=222)
    enabled = requests.get(qdrant.url + "/cluster", timeout=5).json()
    validate(enabled, "ClusterStatusResponse")
    result = enabled["result"]
    assert result["status"] == "enabled"
    assert result["peer_id"] == PEER
    assert set(result["peers"]) == {str(PEER), "222", "333"}
    assert result["raft_info"]["leader"] == 222
    assert result["raft_info"]["role"] == "Follower"


def test_snapshot_create_and_list_match_schema_and_naming(qdrant):
    qdrant.create_collection("c")
    created = requests.post(qdrant.url + "/collections/c/snapshots", timeout=30).json()
    validate(created, "SnapshotCreateResponse")
    listed = requests.get(qdrant.url + "/collections/c/snapshots", timeout=5).json()
    validate(listed, "SnapshotListResponse")
    description = created["result"]
    assert listed["result"] == [description]
    assert SNAPSHOT_NAME.match(description["name"])
    assert NAIVE_UTC.match(description["creation_time"])  # naive UTC, no zone suffix
    assert re.fullmatch(r"[0-9a-f]{64}", description["checksum"])

    shard = requests.post(qdrant.url + "/collections/c/shards/0/snapshots", timeout=30).json()
    validate(shard, "SnapshotCreateResponse")
    assert re.fullmatch(r"c-shard-0-\d{4}(-\d{2}){5}\.snapshot", shard["result"]["name"])
    shard_list = requests.get(qdrant.url + "/collections/c/shards/0/snapshots", timeout=5).json()
    validate(shard_list, "SnapshotListResponse")
    assert [s["name"] for s in shard_list["result"]] == [shard["result"]["name"]]
    assert (qdrant.snapshots_path / "c" / "shards" / "0" / shard["result"]["name"]).is_file()


def test_errors_use_qdrants_json_envelope(qdrant):
    resp = requests.get(qdrant.url + "/collections/nope", timeout=5)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/json")
    validate(resp.json(), "Error")
    assert resp.json()["status"]["error"] == "Not found: Collection `nope` doesn't exist!"
    assert "result" not in resp.json()


# ----- snapshot files -------------------------------------------------------------------------------------


def test_snapshot_is_a_real_tar_with_a_sidecar_checksum(qdrant):
    qdrant.create_collection("c", points=7, size_bytes=300_000, shard_number=2)
    description = create_snapshot(qdrant)
    path = qdrant.snapshots_path / "c" / description["name"]
    sidecar = path.with_name(path.name + ".checksum")
    data = path.read_bytes()
    assert sidecar.read_text() == hashlib.sha256(data).hexdigest() == description["checksum"]
    assert "\n" not in sidecar.read_text()
    assert description["size"] == len(data)
    with tarfile.open(path, "r:") as tar:  # uncompressed tar, Qdrant's layout
        names = set(tar.getnames())
        assert tar.extractfile("version.info").read() == b"0.4.2"  # the format version, not Qdrant's
        segments = sorted(n for n in names if n.startswith("0/segments/") and n.endswith(".tar"))
        assert len(segments) == 1
        with tarfile.open(fileobj=tar.extractfile(segments[0])) as nested:
            assert {"snapshot/files/data.bin", "segment.json", "version.info"} <= set(nested.getnames())
        replica = json.loads(tar.extractfile("1/replica_state.json").read())
        assert replica["is_local"] is True and set(replica["peers"].values()) == {"Active"}
    assert {"config.json", "payload_index.json", "0/shard_config.json", "1/shard_config.json",
            "0/wal/first-index", "0/applied_seq.json", "0/newest_clocks.json", "1/oldest_clocks.json"} <= names
    assert not [p for p in (qdrant.snapshots_path / "c").iterdir() if p.suffix == ".tmp"]

    body = download(qdrant, f"/collections/c/snapshots/{description['name']}")
    assert hashlib.sha256(body).hexdigest() == description["checksum"]


def test_download_has_content_length_and_plain_text_errors(qdrant):
    qdrant.create_collection("c", size_bytes=200_000)
    description = create_snapshot(qdrant)
    with requests.get(f"{qdrant.url}/collections/c/snapshots/{description['name']}", stream=True,
                      timeout=10) as resp:
        assert resp.headers["Content-Length"] == str(description["size"])
        assert resp.headers["Content-Type"] == "application/octet-stream"

    missing = requests.get(qdrant.url + "/collections/c/snapshots/nope.snapshot", timeout=5)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/plain")
    assert missing.text == "Not found: Snapshot nope.snapshot not found"

    no_collection = requests.get(qdrant.url + "/collections/gone/snapshots/x.snapshot", timeout=5)
    assert no_collection.status_code == 404
    assert no_collection.text == "Not found: Collection `gone` doesn't exist!"
    escape = requests.get(qdrant.url + "/collections/c/snapshots/..%2F..%2Fstorage", timeout=5)
    assert escape.status_code == 404


def test_delete_removes_snapshot_and_sidecar(qdrant):
    qdrant.create_collection("c")
    name = create_snapshot(qdrant)["name"]
    resp = requests.delete(f"{qdrant.url}/collections/c/snapshots/{name}", timeout=5)
    assert resp.json()["result"] is True
    assert qdrant.snapshot_files("c") == []
    again = requests.delete(f"{qdrant.url}/collections/c/snapshots/{name}", timeout=5)
    assert again.status_code == 404
    assert again.json()["status"]["error"] == f"Not found: Snapshot {name} not found"


def test_wait_false_answers_202_and_the_snapshot_appears_later(qdrant):
    qdrant.create_collection("c", size_bytes=2_000_000)
    resp = requests.post(qdrant.url + "/collections/c/snapshots?wait=false", timeout=5)
    assert resp.status_code == 202
    validate(resp.json(), "AcceptedResponse")
    assert "result" not in resp.json()

    def listed() -> list:
        return requests.get(qdrant.url + "/collections/c/snapshots", timeout=5).json()["result"]

    (description,) = wait_until(listed, what="the background snapshot to be listed")
    # A listed snapshot is complete and already has its checksum.
    path = qdrant.snapshots_path / "c" / description["name"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == description["checksum"]


def test_wait_must_be_a_boolean(qdrant):
    qdrant.create_collection("c")
    resp = requests.post(qdrant.url + "/collections/c/snapshots?wait=maybe", timeout=5)
    assert resp.status_code == 400
    assert resp.json()["time"] == 0.0
    assert qdrant.snapshot_files("c") == []


# ----- recovery -------------------------------------------------------------------------------------------


def test_recover_from_file_url_inside_snapshots_dir_restores_points(qdrant):
    qdrant.create_collection("c", points=50)
    name = create_snapshot(qdrant)["name"]
    qdrant.drop_collection("c")
    location = (qdrant.snapshots_path / "c" / name).as_uri()
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover", json={"location": location},
                        timeout=30)
    assert resp.json() == {"result": True, "status": "ok", "time": resp.json()["time"]}
    assert qdrant.points_count("c") == 50


def test_recover_file_url_outside_snapshots_dir_is_forbidden(qdrant, tmp_path):
    qdrant.create_collection("c", points=5)
    outside = tmp_path / "elsewhere.snapshot"
    outside.write_bytes(b"anything")
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                        json={"location": outside.as_uri()}, timeout=30)
    assert resp.status_code == 403
    assert resp.json()["status"]["error"].startswith("Forbidden: ")
    sneaky = (qdrant.snapshots_path / ".." / "storage" / "x").as_posix()
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                        json={"location": "file://" + sneaky}, timeout=30)
    assert resp.status_code == 403
    assert qdrant.points_count("c") == 5

    s3 = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                      json={"location": "s3://bucket/c.snapshot"}, timeout=30)
    assert s3.status_code == 400


def test_recover_from_http_url_checks_the_checksum(qdrant):
    qdrant.create_collection("c", points=30)
    description = create_snapshot(qdrant)
    url = f"{qdrant.url}/collections/c/snapshots/{description['name']}"
    wrong = "0" * 64
    qdrant.drop_collection("c")
    qdrant.create_collection("c", points=3)
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                        json={"location": url, "checksum": wrong}, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["status"]["error"] == (
        f"Wrong input: Snapshot checksum mismatch: expected {wrong}, got {description['checksum']}")
    assert qdrant.points_count("c") == 3  # untouched

    ok = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                      json={"location": url, "checksum": description["checksum"].upper()}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert qdrant.points_count("c") == 30


@pytest.mark.parametrize("checksum", ["abc", "g" * 64, "0" * 63])
def test_checksum_must_be_64_hex_chars(qdrant, checksum):
    qdrant.create_collection("c")
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                        json={"location": "http://127.0.0.1:1/x.snapshot", "checksum": checksum}, timeout=10)
    assert resp.status_code == 422
    assert resp.json()["time"] == 0.0
    upload = requests.post(qdrant.url + "/collections/c/snapshots/upload", params={"checksum": checksum},
                           files={"snapshot": ("x.snapshot", b"x")}, timeout=10)
    assert upload.status_code == 422


def test_recovery_rejects_broken_archives_and_leaves_collection_alone(qdrant):
    qdrant.create_collection("c", points=12, size_bytes=100_000)
    name = create_snapshot(qdrant)["name"]
    good = (qdrant.snapshots_path / "c" / name).read_bytes()
    damaged = {
        "not-a-tar.snapshot": b"this is not a tar archive" * 100,
        "truncated.snapshot": good[: len(good) // 3],
    }
    for filename, body in damaged.items():
        resp = requests.post(qdrant.url + "/collections/c/snapshots/upload",
                             files={"snapshot": (filename, body)}, timeout=30)
        assert resp.status_code == 400, (filename, resp.text)
        assert resp.json()["status"]["error"].startswith("Wrong input: "), resp.text
        assert qdrant.points_count("c") == 12


def test_damaged_segment_bytes_are_caught_only_by_the_checksum(qdrant):
    """Like real Qdrant, the double does not notice flipped bytes inside segment data: without a checksum the
    damaged archive is restored; with the snapshot's checksum it is refused and the collection stays."""
    qdrant.create_collection("c", points=12, size_bytes=100_000)
    description = create_snapshot(qdrant)
    good = (qdrant.snapshots_path / "c" / description["name"]).read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # inside the segment data, tar headers intact
    qdrant.create_collection("d", points=5, size_bytes=100_000)
    refused = requests.post(qdrant.url + "/collections/d/snapshots/upload",
                            params={"checksum": description["checksum"]},
                            files={"snapshot": ("flipped.snapshot", bytes(flipped))}, timeout=30)
    assert refused.status_code == 400 and "hecksum mismatch" in refused.json()["status"]["error"]
    assert qdrant.points_count("d") == 5
    accepted = requests.post(qdrant.url + "/collections/d/snapshots/upload",
                             files={"snapshot": ("flipped.snapshot", bytes(flipped))}, timeout=30)
    assert accepted.status_code == 200, accepted.text
    assert qdrant.points_count("d") == 12


def test_recover_into_existing_collection_with_other_shard_number_is_rejected(qdrant):
    qdrant.create_collection("c", points=10, shard_number=1)
    name = create_snapshot(qdrant)["name"]
    qdrant.drop_collection("c")
    qdrant.create_collection("c", points=99, shard_number=2)
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover",
                        json={"location": (qdrant.snapshots_path / "c" / name).as_uri()}, timeout=30)
    assert resp.status_code == 400
    assert qdrant.points_count("c") == 99


def test_snapshot_in_a_newer_collection_format_is_rejected(qdrant, tmp_path):
    qdrant.create_collection("c", points=4)
    original = qdrant.snapshots_path / "c" / create_snapshot(qdrant)["name"]
    newer = tmp_path / "newer.snapshot"
    with tarfile.open(original, "r:") as source, tarfile.open(newer, "w", format=tarfile.GNU_FORMAT) as target:
        for member in source:
            data = source.extractfile(member) if member.isfile() else None
            if member.name == "version.info":
                member.size, data = 5, io.BytesIO(b"9.9.9")
            target.addfile(member, data)
    qdrant.drop_collection("c")
    resp = requests.post(qdrant.url + "/collections/c/snapshots/upload",
                         files={"snapshot": ("newer.snapshot", newer.read_bytes())}, timeout=30)
    assert resp.status_code == 400
    assert "collection format version 9.9.9 is newer than 0.4.2" in resp.json()["status"]["error"]
    assert not qdrant.collection_exists("c")


def test_upload_keeps_the_file_without_sidecar_and_restores_points(qdrant):
    qdrant.create_collection("c", points=64, size_bytes=150_000)
    description = create_snapshot(qdrant)
    body = download(qdrant, f"/collections/c/snapshots/{description['name']}")
    requests.delete(f"{qdrant.url}/collections/c/snapshots/{description['name']}", timeout=5)
    qdrant.drop_collection("c")

    resp = requests.post(qdrant.url + "/collections/c/snapshots/upload",
                         params={"checksum": description["checksum"], "priority": "snapshot"},
                         files={"snapshot": ("restored.snapshot", io.BytesIO(body))}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert qdrant.points_count("c") == 64
    kept = qdrant.snapshots_path / "c" / "restored.snapshot"
    assert kept.read_bytes() == body
    assert qdrant.snapshot_files("c") == [kept]  # no .checksum sidecar
    (listed,) = requests.get(qdrant.url + "/collections/c/snapshots", timeout=5).json()["result"]
    assert listed["name"] == "restored.snapshot"
    assert "checksum" not in listed
    assert not list((qdrant.snapshots_path / "tmp" / "upload").iterdir())  # spool cleaned up


def test_upload_with_wrong_checksum_is_rejected_before_anything_is_kept(qdrant):
    qdrant.create_collection("c", points=8)
    description = create_snapshot(qdrant)
    body = download(qdrant, f"/collections/c/snapshots/{description['name']}")
    wrong = "ab" * 32
    resp = requests.post(qdrant.url + "/collections/c/snapshots/upload", params={"checksum": wrong},
                         files={"snapshot": ("other.snapshot", body)}, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["status"]["error"] == (
        f"Checksum mismatch: expected {description['checksum']}, actual {wrong}")
    assert not (qdrant.snapshots_path / "c" / "other.snapshot").exists()


def test_wait_false_recovery_finishes_in_background(qdrant):
    qdrant.create_collection("c", points=21)
    name = create_snapshot(qdrant)["name"]
    qdrant.drop_collection("c")
    resp = requests.put(qdrant.url + "/collections/c/snapshots/recover?wait=false",
                        json={"location": (qdrant.snapshots_path / "c" / name).as_uri()}, timeout=30)
    assert resp.status_code == 202
    assert "result" not in resp.json()

    def active() -> bool:
        info = requests.get(qdrant.url + "/collections/c/cluster", timeout=5)
        shards = info.json()["result"]["local_shards"] if info.status_code == 200 else []
        return bool(shards) and all(s["state"] == "Active" for s in shards)

    wait_until(active, what="the recovered collection to be active")
    assert qdrant.points_count("c") == 21


def test_shard_snapshot_recovery_paths(qdrant):
    qdrant.create_collection("c", points=40, shard_number=2)  # 20 + 20
    shard_name = requests.post(qdrant.url + "/collections/c/shards/1/snapshots",
                               timeout=30).json()["result"]["name"]
    qdrant.drop_collection("c")
    qdrant.create_collection("c", points=4, shard_number=2)  # 2 + 2

    by_name = requests.put(qdrant.url + "/collections/c/shards/1/snapshots/recover",
                           json={"location": shard_name}, timeout=30)
    assert by_name.status_code == 200, by_name.text
    assert qdrant.points_count("c") == 22

    file_url = (qdrant.snapshots_path / "c" / "shards" / "1" / shard_name).as_uri()
    rejected = requests.put(qdrant.url + "/collections/c/shards/1/snapshots/recover",
                            json={"location": file_url}, timeout=30)
    assert rejected.status_code == 400

    missing_shard = requests.put(qdrant.url + "/collections/c/shards/7/snapshots/recover",
                                 json={"location": shard_name}, timeout=30)
    assert missing_shard.status_code == 404
    assert missing_shard.json()["status"]["error"] == "Not found: shard 7 not found"

    body = download(qdrant, f"/collections/c/shards/1/snapshots/{shard_name}")
    qdrant.drop_collection("c")
    qdrant.create_collection("c", points=4, shard_number=2)
    upload = requests.post(qdrant.url + "/collections/c/shards/1/snapshots/upload",
                           files={"snapshot": ("s.snapshot", body)}, timeout=30)
    assert upload.status_code == 200, upload.text
    assert qdrant.points_count("c") == 22
    assert not (qdrant.snapshots_path / "c" / "s.snapshot").exists()  # shard uploads are not kept

    # A collection snapshot is not a shard snapshot.
    collection_snapshot = download(qdrant, f"/collections/c/snapshots/{create_snapshot(qdrant)['name']}")
    mixed = requests.post(qdrant.url + "/collections/c/shards/0/snapshots/upload",
                          files={"snapshot": ("c.snapshot", collection_snapshot)}, timeout=30)
    assert mixed.status_code == 400


def test_collection_create_and_delete_over_http(qdrant):
    resp = requests.put(qdrant.url + "/collections/fresh",
                        json={"vectors": {"size": 8, "distance": "Dot"}, "shard_number": 3}, timeout=5)
    assert resp.json()["result"] is True
    info = requests.get(qdrant.url + "/collections/fresh", timeout=5).json()["result"]
    assert info["points_count"] == 0
    assert info["config"]["params"]["shard_number"] == 3
    again = requests.put(qdrant.url + "/collections/fresh", json={}, timeout=5)
    assert again.status_code == 400
    assert again.json()["status"]["error"] == "Wrong input: Collection `fresh` already exists!"
    assert requests.delete(qdrant.url + "/collections/fresh", timeout=5).json()["result"] is True
    assert requests.delete(qdrant.url + "/collections/fresh", timeout=5).json()["result"] is False


# ----- auth ------------------------------------------------------------------------------------------------


def test_api_key_auth(tmp_path):
    with QdrantDouble(tmp_path / "q", api_key="s3cret-key") as qdrant:
        qdrant.create_collection("c")
        assert requests.get(qdrant.url + "/", timeout=5).status_code == 200
        assert requests.get(qdrant.url + "/healthz", timeout=5).status_code == 200

        missing = requests.get(qdrant.url + "/collections", timeout=5)
        assert missing.status_code == 401
        assert missing.headers["Content-Type"].startswith("text/plain")
        assert missing.text == "Must provide an API key or an Authorization bearer token"

        wrong = requests.get(qdrant.url + "/collections", headers={"api-key": "nope"}, timeout=5)
        assert (wrong.status_code, wrong.text) == (401, "Invalid API key or JWT")

        by_header = requests.get(qdrant.url + "/collections", headers={"api-key": "s3cret-key"}, timeout=5)
        by_bearer = requests.get(qdrant.url + "/collections",
                                 headers={"Authorization": "Bearer s3cret-key"}, timeout=5)
        assert by_header.status_code == by_bearer.status_code == 200
        assert by_header.json()["result"] == {"collections": [{"name": "c"}]}


# ----- faults -----------------------------------------------------------------------------------------------


def test_fail_next_fails_matching_requests_then_recovers(qdrant):
    qdrant.faults.fail_next(2, status=503, path_contains="/collections")
    assert requests.get(qdrant.url + "/", timeout=5).status_code == 200  # does not match
    first = requests.get(qdrant.url + "/collections", timeout=5)
    assert first.status_code == 503
    validate(first.json(), "Error")
    assert requests.get(qdrant.url + "/collections", timeout=5).status_code == 503
    assert requests.get(qdrant.url + "/collections", timeout=5).status_code == 200

    qdrant.faults.fail_next(1, status=502, plain_text=True)
    plain = requests.get(qdrant.url + "/collections", timeout=5)
    assert plain.status_code == 502
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert ("GET", "/collections") in qdrant.requests_seen


def test_download_faults(qdrant):
    qdrant.create_collection("c", size_bytes=1_000_000)
    description = create_snapshot(qdrant)
    url = f"{qdrant.url}/collections/c/snapshots/{description['name']}"

    qdrant.faults.cut_after(100_000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10).content  # noqa: B018
    assert hashlib.sha256(download(qdrant, url[len(qdrant.url):])).hexdigest() == description["checksum"]

    qdrant.faults.corrupt_downloads(True)
    corrupted = download(qdrant, url[len(qdrant.url):])
    assert len(corrupted) == description["size"]
    assert hashlib.sha256(corrupted).hexdigest() != description["checksum"]
    listed = requests.get(qdrant.url + "/collections/c/snapshots", timeout=5).json()["result"]
    assert listed[0]["checksum"] == description["checksum"]
    qdrant.faults.reset()

    qdrant.faults.stall(30)
    with pytest.raises(requests.exceptions.ConnectionError):  # read timeout mid-body
        requests.get(url, timeout=(5, 0.5)).content  # noqa: B018
    qdrant.faults.reset()

    qdrant.faults.throttle(2_000_000)
    started = time.monotonic()
    assert len(download(qdrant, url[len(qdrant.url):])) == description["size"]
    assert time.monotonic() - started >= 0.4  # ~1 MB at 2 MB/s
