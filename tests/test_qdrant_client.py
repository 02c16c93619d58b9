"""QdrantClient against the Qdrant double over real HTTP: every call, both error styles, retries only
where safe, streaming downloads that notice truncation, streaming uploads, bounded memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.adapters.qdrant import QdrantClient, QdrantError, QdrantStreamError, QdrantUnavailable
from tests.qdrant_double import QdrantDouble
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(qdrant) -> QdrantClient:
    with QdrantClient(qdrant.url, backoff=0.01) as c:
        yield c


def read_all(download) -> bytes:
    with download:
        return b"".join(download)


# ----- every call ---------------------------------------------------------------------------------------


def test_discovery_calls(qdrant, client):
    qdrant.create_collection("a", points=11, shard_number=2)
    qdrant.create_collection("b")
    assert client.root()["title"] == "qdrant - vector search engine"
    assert client.version() == "1.19.0"
    assert client.cluster_status() == {"status": "disabled"}
    assert sorted(client.list_collections()) == ["a", "b"]
    info = client.collection_info("a")
    assert info["points_count"] == 11
    assert info["config"]["params"]["shard_number"] == 2
    cluster = client.collection_cluster_info("a")
    assert [s["shard_id"] for s in cluster["local_shards"]] == [0, 1]
    qdrant.enable_cluster({7: "http://node-7:6335/"})
    assert set(client.cluster_status()["peers"]) == {str(qdrant.peer_id), "7"}


def test_collection_snapshot_lifecycle(qdrant, client):
    qdrant.create_collection("c", points=5, size_bytes=500_000)
    created = client.create_snapshot("c")
    assert created["name"].startswith(f"c-{qdrant.peer_id}-")
    assert client.list_snapshots("c") == [created]

    download = client.download_snapshot("c", created["name"], chunk_size=64 * 1024)
    assert download.size == created["size"]
    chunks = list(download)
    assert max(len(c) for c in chunks) <= 64 * 1024
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == created["checksum"]
    assert download.bytes_read == created["size"]

    assert client.delete_snapshot("c", created["name"]) is True
    assert client.list_snapshots("c") == []


def test_wait_false_returns_none_and_work_finishes_later(qdrant, client):
    qdrant.create_collection("c")
    assert client.create_snapshot("c", wait=False) is None
    (created,) = wait_until(lambda: client.list_snapshots("c"), what="background snapshot")
    assert client.delete_snapshot("c", created["name"], wait=False) is True
    wait_until(lambda: client.list_snapshots("c") == [], what="background delete")


def test_shard_snapshot_calls(qdrant, client):
    qdrant.create_collection("c", points=30, shard_number=3)  # 10 per shard
    created = client.create_snapshot("c", shard_id=2)
    assert created["name"].startswith("c-shard-2-")
    assert client.list_snapshots("c", shard_id=2) == [created]
    body = read_all(client.download_snapshot("c", created["name"], shard_id=2))
    assert hashlib.sha256(body).hexdigest() == created["checksum"]

    qdrant.drop_collection("c")
    qdrant.create_collection("c", points=3, shard_number=3)  # 1 per shard
    assert client.recover_from_url("c", created["name"], shard_id=2, priority="snapshot") is True
    assert qdrant.points_count("c") == 12
    [recover] = [r for r in qdrant.requests_log if r.path == "/collections/c/shards/2/snapshots/recover"]
    assert recover.json == {"location": created["name"], "priority": "snapshot"}  # what Qdrant was told

    qdrant.drop_collection("c")
    qdrant.create_collection("c", points=3, shard_number=3)
    assert client.upload_and_recover("c", io.BytesIO(body), shard_id=2, size=len(body),
                                           checksum=created["checksum"]) is True
    assert qdrant.points_count("c") == 12

    assert client.delete_snapshot("c", created["name"], shard_id=2) is True
    assert client.list_snapshots("c", shard_id=2) == []
    assert client.create_snapshot("c", shard_id=0, wait=False) is None
    wait_until(lambda: client.list_snapshots("c", shard_id=0), what="background shard snapshot")


def test_recover_from_url_pulls_from_a_node_with_its_api_key(tmp_path):
    with QdrantDouble(tmp_path / "src", api_key="src-key") as source, \
            QdrantDouble(tmp_path / "dst") as target:
        source.create_collection("c", points=33)
        src_client = QdrantClient(source.url, "src-key")
        created = src_client.create_snapshot("c")
        url = f"{source.url}/collections/c/snapshots/{created['name']}"
        dst = QdrantClient(target.url)
        assert dst.recover_from_url("c", url, checksum=created["checksum"], api_key="src-key") is True
        assert target.points_count("c") == 33
        with pytest.raises(QdrantError) as info:
            dst.recover_from_url("c", url)  # no key for the source node
        assert info.value.status == 500
        assert "401" in info.value.message


def test_recover_from_url_with_checksum_mismatch_is_a_400(qdrant, client):
    qdrant.create_collection("c", points=9)
    created = client.create_snapshot("c")
    url = f"{qdrant.url}/collections/c/snapshots/{created['name']}"
    with pytest.raises(QdrantError) as info:
        client.recover_from_url("c", url, checksum="f" * 64)
    assert info.value.status == 400
    assert info.value.message == (
        f"Wrong input: Snapshot checksum mismatch: expected {'f' * 64}, got {created['checksum']}")
    assert not info.value.transient


def test_upload_and_recover_round_trip(qdrant, client, tmp_path):
    qdrant.create_collection("c", points=77, size_bytes=3_000_000, shard_number=2)
    created = client.create_snapshot("c")
    local = tmp_path / "backup.snapshot"
    with open(local, "wb") as out, client.download_snapshot("c", created["name"]) as download:
        for chunk in download:
            out.write(chunk)
    client.delete_snapshot("c", created["name"])
    qdrant.drop_collection("c")
    assert "c" not in client.list_collections()

    with open(local, "rb") as f:
        assert client.upload_and_recover("c", f, filename=created["name"], size=local.stat().st_size,
                                         checksum=created["checksum"], priority="snapshot") is True
    assert client.collection_info("c")["points_count"] == 77
    # Qdrant keeps the uploaded file, without a checksum sidecar.
    assert [s["name"] for s in client.list_snapshots("c")] == [created["name"]]
    assert "checksum" not in client.list_snapshots("c")[0]

    qdrant.drop_collection("c")
    with open(local, "rb") as f:  # size unknown: chunked transfer encoding
        assert client.upload_and_recover("c", f, filename="chunked.snapshot") is True
    assert qdrant.points_count("c") == 77


def test_upload_streams_the_source_in_bounded_reads(qdrant, client):
    qdrant.create_collection("c", points=3, size_bytes=2_500_000)
    body = read_all(client.download_snapshot("c", client.create_snapshot("c")["name"]))

    class Recording(io.BytesIO):
        reads: list[int | None] = []

        def read(self, n: int | None = -1) -> bytes:
            self.reads.append(n)
            return super().read(n)

    source = Recording(body)
    assert client.upload_and_recover("c", source, size=len(body)) is True
    assert source.reads and all(n is not None and 0 < n <= 1024 * 1024 for n in source.reads)
    assert len(source.reads) >= 3  # 2.5 MB arrived in several reads, not one


def test_upload_with_wrong_checksum_is_refused(qdrant, client):
    qdrant.create_collection("c", points=2)
    created = client.create_snapshot("c")
    body = read_all(client.download_snapshot("c", created["name"]))
    with pytest.raises(QdrantError) as info:
        client.upload_and_recover("c", io.BytesIO(body), filename="x.snapshot", checksum="0" * 64)
    assert info.value.status == 400
    assert info.value.message == f"Checksum mismatch: expected {created['checksum']}, actual {'0' * 64}"


def test_upload_size_must_match_the_source(qdrant, client):
    qdrant.create_collection("c")
    with pytest.raises(ValueError, match="announced"):
        client.upload_and_recover("c", io.BytesIO(b"short"), size=10)
    with pytest.raises(ValueError):
        client.upload_and_recover("c", io.BytesIO(b"x"), filename="../escape.snapshot")


# ----- errors ---------------------------------------------------------------------------------------------


def test_json_error_becomes_qdrant_error(client):
    with pytest.raises(QdrantError) as info:
        client.collection_info("nope")
    assert (info.value.status, info.value.message) == (404, "Not found: Collection `nope` doesn't exist!")
    assert not isinstance(info.value, QdrantUnavailable)


def test_plain_text_download_error_becomes_qdrant_error(qdrant, client):
    qdrant.create_collection("c")
    with pytest.raises(QdrantError) as info:
        client.download_snapshot("c", "missing.snapshot")
    assert (info.value.status, info.value.message) == (404, "Not found: Snapshot missing.snapshot not found")


def test_auth_errors_and_keys(tmp_path):
    with QdrantDouble(tmp_path / "q", api_key="top-secret-key") as qdrant:
        anonymous = QdrantClient(qdrant.url)
        assert anonymous.version() == "1.19.0"  # GET / needs no key
        with pytest.raises(QdrantError) as missing:
            anonymous.list_collections()
        assert (missing.value.status, missing.value.message) == (
            401, "Must provide an API key or an Authorization bearer token")

        wrong = QdrantClient(qdrant.url, "wrong-key")
        with pytest.raises(QdrantError) as invalid:
            wrong.list_collections()
        assert (invalid.value.status, invalid.value.message) == (401, "Invalid API key or JWT")

        with pytest.raises(QdrantError) as upload:  # refused before the body is read
            anonymous.upload_and_recover("c", io.BytesIO(b"x" * 3_000_000), size=3_000_000)
        assert upload.value.status == 401

        right = QdrantClient(wrong.url, "top-secret-key")
        assert right.list_collections() == []
        assert "top-secret-key" not in repr(right)


def test_api_key_never_appears_in_errors(tmp_path):
    free_port = _free_port()
    client = QdrantClient(f"http://127.0.0.1:{free_port}", "very-secret-key", retries=0)
    with pytest.raises(QdrantUnavailable) as info:
        client.list_collections()
    assert "very-secret-key" not in str(info.value) + info.value.message + repr(client)


def test_presigned_url_secrets_are_redacted_from_qdrant_messages(qdrant, client):
    qdrant.create_collection("c")
    location = f"http://127.0.0.1:{_free_port()}/b/c.snapshot?X-Amz-Signature=deadbeefcafe"
    with pytest.raises(QdrantError) as info:
        client.recover_from_url("c", location)
    assert info.value.status == 500
    assert "deadbeefcafe" not in info.value.message
    assert "127.0.0.1" in info.value.message  # the rest of Qdrant's message survives


def test_unreachable_qdrant_is_unavailable():
    client = QdrantClient(f"http://127.0.0.1:{_free_port()}", retries=1, backoff=0.01, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(QdrantUnavailable) as info:
        client.root()
    assert info.value.status is None
    assert info.value.transient
    assert time.monotonic() - started < 5


# ----- retries ---------------------------------------------------------------------------------------------


def test_get_is_retried_on_503(qdrant, client):
    qdrant.create_collection("c")
    qdrant.faults.fail_next(2, status=503, path_contains="/collections")
    assert client.list_collections() == ["c"]
    assert qdrant.requests_seen.count(("GET", "/collections")) == 3


def test_get_gives_up_after_retries_with_qdrants_message(qdrant):
    qdrant.faults.fail_next(10, status=503)
    client = QdrantClient(qdrant.url, retries=2, backoff=0.01)
    with pytest.raises(QdrantError) as info:
        client.list_collections()
    assert info.value.status == 503
    assert "injected fault" in info.value.message
    assert info.value.transient
    assert qdrant.requests_seen.count(("GET", "/collections")) == 3  # first try + 2 retries


def test_post_is_not_retried(qdrant, client):
    """A create that may have reached Qdrant is never repeated silently: it could make two snapshots."""
    qdrant.create_collection("c")
    qdrant.faults.fail_next(1, status=503, path_contains="/snapshots")
    with pytest.raises(QdrantError) as info:
        client.create_snapshot("c")
    assert info.value.status == 503
    assert qdrant.requests_seen.count(("POST", "/collections/c/snapshots")) == 1
    assert client.list_snapshots("c") == []
    assert client.create_snapshot("c")["name"]  # the caller decides to try again


def test_download_start_is_retried_but_not_mid_stream(qdrant, client):
    qdrant.create_collection("c", size_bytes=400_000)
    created = client.create_snapshot("c")
    path = f"/collections/c/snapshots/{created['name']}"
    qdrant.faults.fail_next(1, status=502, path_contains=path, plain_text=True)
    assert hashlib.sha256(read_all(client.download_snapshot("c", created["name"]))).hexdigest() == \
        created["checksum"]
    assert qdrant.requests_seen.count(("GET", path)) == 2

    qdrant.faults.cut_after(150_000)
    download = client.download_snapshot("c", created["name"])
    with pytest.raises(QdrantStreamError) as info:
        read_all(download)
    assert info.value.status is None and info.value.transient
    assert download.bytes_read <= 150_000
    assert qdrant.requests_seen.count(("GET", path)) == 3  # no hidden re-download


def test_stalled_download_raises_instead_of_hanging(qdrant):
    qdrant.create_collection("c", size_bytes=400_000)
    client = QdrantClient(qdrant.url, read_timeout=0.5)
    created = client.create_snapshot("c")
    qdrant.faults.stall(30, after_bytes=100_000)
    started = time.monotonic()
    with pytest.raises(QdrantStreamError):
        read_all(client.download_snapshot("c", created["name"]))
    assert time.monotonic() - started < 10


def read_into(download, size: int = 64 * 1024) -> bytes:
    """Everything, through ``readinto`` with one reused buffer (how storage writes read a download)."""
    buffer = bytearray(size)
    out = io.BytesIO()
    with download:
        while count := download.readinto(buffer):
            out.write(memoryview(buffer)[:count])
    return out.getvalue()


def test_readinto_fills_the_callers_buffer_from_the_socket(qdrant, client):
    qdrant.create_collection("c", size_bytes=700_000)
    created = client.create_snapshot("c")
    download = client.download_snapshot("c", created["name"])
    # (That this takes the zero-copy path is tests/test_third_party_fences.py's to check.)
    data = read_into(download)
    assert len(data) == created["size"] == download.bytes_read
    assert hashlib.sha256(data).hexdigest() == created["checksum"]
    assert download.readinto(bytearray(10)) == 0  # stays at the end


def test_readinto_notices_a_download_cut_short(qdrant, client):
    qdrant.create_collection("c", size_bytes=400_000)
    created = client.create_snapshot("c")
    qdrant.faults.cut_after(150_000)
    download = client.download_snapshot("c", created["name"])
    with pytest.raises(QdrantStreamError) as info:
        read_into(download)
    assert info.value.transient and download.bytes_read <= 150_000
    assert "of" in info.value.message and str(created["size"]) in info.value.message


def test_a_download_is_read_one_way_only(qdrant, client):
    qdrant.create_collection("c", size_bytes=100_000)
    created = client.create_snapshot("c")
    with client.download_snapshot("c", created["name"]) as download:
        download.readinto(bytearray(10))
        with pytest.raises(RuntimeError, match="not both"):
            iter(download)


@pytest.fixture
def gzip_server():
    """A server that answers every GET with a gzip-encoded body (Qdrant may compress responses)."""
    import gzip
    import http.server
    import threading

    body = os.urandom(300_000)
    encoded = gzip.compress(body)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", body
    server.shutdown()
    server.server_close()


def test_readinto_decodes_a_compressed_download(gzip_server):
    url, body = gzip_server
    with QdrantClient(url) as client:
        download = client.download_snapshot("c", "s.snapshot")
        assert download.size is None  # Content-Length counts the compressed bytes: not checkable
        assert read_into(download, 1000) == body


# ----- memory -------------------------------------------------------------------------------------------

MEMORY_SCRIPT = r"""
import hashlib, json, resource, sys
from shared.adapters.qdrant import QdrantClient

url, collection, name = sys.argv[1:4]
client = QdrantClient(url)
client.root()  # import and connection machinery warmed up before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
digest = hashlib.sha256()
total = 0
with client.download_snapshot(collection, name) as download:
    for chunk in download:
        digest.update(chunk)
        total += len(chunk)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "sha256": digest.hexdigest(), "bytes": total}))
"""


def test_200mb_download_keeps_memory_flat(qdrant, client):
    qdrant.create_collection("big", points=1000, size_bytes=200 * 1024 * 1024)
    created = client.create_snapshot("big")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, qdrant.url, "big", created["name"]],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["bytes"] == created["size"] > 200 * 1024 * 1024
    assert report["sha256"] == created["checksum"]
    growth_mib = (report["after_kib"] - report["before_kib"]) / 1024  # ru_maxrss is KiB on Linux
    assert growth_mib < 50, f"peak RSS grew by {growth_mib:.1f} MiB while downloading"


def _free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
