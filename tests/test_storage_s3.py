"""S3Storage against moto's real S3 HTTP server, through the real minio client.

Incomplete multipart uploads are checked with boto3 (independent of the minio client under test): an aborted
upload that was not cleaned up costs money on real S3 and is invisible in normal listings.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import requests

from shared.adapters.storage import (
    BucketNotFound,
    Cancelled,
    InvalidKey,
    ObjectNotFound,
    PermissionDenied,
    S3Storage,
    StorageError,
    StorageUnavailable,
    WrongRegion,
    from_config,
)
from tests.storage_roundtrip import ChunkReader, generate, run_in_child

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size: makes "more than one part was uploaded" cheap to reach


@pytest.fixture
def store(s3_server, s3_bucket) -> S3Storage:
    return S3Storage(s3_server.endpoint, s3_bucket, s3_server.region, s3_server.access_key,
                     s3_server.secret_key, part_size=PART)


@pytest.fixture
def admin(s3_server):
    """A boto3 client: an independent view of the bucket (objects and incomplete multipart uploads)."""
    return boto3.client("s3", endpoint_url=s3_server.endpoint, region_name=s3_server.region,
                        aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def incomplete_uploads(admin, bucket: str) -> list[dict]:
    return admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def object_keys(admin, bucket: str) -> list[str]:
    return [o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", [])]


def chunks(n: int, size: int = MiB) -> Iterator[bytes]:
    for index in range(n):
        yield bytes([index % 256]) * size


def all_messages(exc: BaseException) -> str:
    """The messages of the exception and of every exception chained to it (what a logged traceback shows,
    minus source lines, which would show this test's own literals)."""
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts.append("".join(traceback.format_exception_only(current)))
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


# -- streaming round trip ------------------------------------------------------------------------------------


def test_200_mib_round_trip_keeps_sha256_and_memory_bounded(s3_server, s3_bucket, admin) -> None:
    backend = {"type": "s3", "endpoint": s3_server.endpoint, "bucket": s3_bucket, "region": s3_server.region,
               "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    report = run_in_child({"backend": backend, "key": "coll/2026-11-24T02:15:00Z/full.snapshot",
                           "mib": 200, "tail": 12345})

    assert report["written_size"] == report["expected_size"] == 200 * MiB + 12345
    assert report["written_sha256"] == report["expected_sha256"]
    assert report["read_sha256"] == report["expected_sha256"]
    assert report["read_size"] == report["stat_size"] == report["expected_size"]
    assert report["last_progress"] == report["expected_size"]
    # 200 MiB went up and came back; the client process grew by about one 16 MiB part (plus copies), not more.
    assert report["peak_rss_mib"] - report["baseline_rss_mib"] < 64, report
    head = admin.head_object(Bucket=s3_bucket, Key="coll/2026-11-24T02:15:00Z/full.snapshot")
    assert head["ContentLength"] == 200 * MiB + 12345
    assert head["ETag"].strip('"').endswith("-13")  # a multipart upload: 13 parts of 16 MiB
    assert incomplete_uploads(admin, s3_bucket) == []
    admin.delete_object(Bucket=s3_bucket, Key="coll/2026-11-24T02:15:00Z/full.snapshot")  # frees moto's RAM


def test_readable_source_with_short_reads(store: S3Storage, admin, s3_bucket) -> None:
    """Parts are packed from reused read buffers: a 5 MiB first part spans eight short reads, more than there
    are buffers, so a part that kept a chunk instead of copying it would hold overwritten bytes."""
    expected = hashlib.sha256()
    result = store.write("a/b.bin", ChunkReader(generate(12, 4321, expected), max_read=700_001))

    data = store.read_bytes("a/b.bin", max_size=20 * MiB)
    assert result.size == len(data) == 12 * MiB + 4321
    assert result.sha256 == expected.hexdigest() == hashlib.sha256(data).hexdigest()
    assert admin.head_object(Bucket=s3_bucket, Key="a/b.bin")["ETag"].strip('"').endswith("-3")  # 5+5+2 MiB


def test_small_objects_and_progress(store: S3Storage, admin, s3_bucket) -> None:
    progress: list[int] = []

    result = store.write("m/manifest.json", [b'{"a"', b"", b": 1}"], on_progress=progress.append)

    assert result.size == 8 and result.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert progress == [4, 8]
    assert admin.get_object(Bucket=s3_bucket, Key="m/manifest.json")["Body"].read() == b'{"a": 1}'
    assert store.write_bytes("empty", b"").size == 0
    assert store.read_bytes("empty") == b""


# -- failures leave no object and no incomplete upload ------------------------------------------------------


def test_source_failure_after_parts_were_uploaded_leaves_nothing(store: S3Storage, admin, s3_bucket) -> None:
    uploads_seen_midway: list[list[dict]] = []

    def failing_source():
        yield from chunks(12)  # 12 MiB: parts 1 and 2 (5 MiB each) are uploading (they upload in parallel)
        uploads = incomplete_uploads(admin, s3_bucket)
        for _ in range(100):  # until both are on the server
            parts = admin.list_parts(Bucket=s3_bucket, Key="c/full.snapshot", UploadId=uploads[0]["UploadId"])
            if len(parts.get("Parts", [])) == 2:
                break
            time.sleep(0.05)
        uploads_seen_midway.append(parts.get("Parts", []))
        raise ConnectionError("qdrant went away")

    with pytest.raises(ConnectionError, match="qdrant went away"):  # the source's own error, unchanged
        store.write("c/full.snapshot", failing_source())

    assert [p["PartNumber"] for p in uploads_seen_midway[0]] == [1, 2]
    assert incomplete_uploads(admin, s3_bucket) == []
    assert object_keys(admin, s3_bucket) == []
    assert not store.exists("c/full.snapshot")
    # minio's parallel-upload worker threads would be left blocked forever after a failure; we use none, and
    # our own part uploaders are gone once write() returns
    assert [t for t in threading.enumerate() if type(t).__module__.startswith("minio")] == []
    assert [t for t in threading.enumerate() if t.name.startswith("qbm-s3-part")] == []


def test_cancel_after_parts_were_uploaded_leaves_nothing(store: S3Storage, admin, s3_bucket) -> None:
    progress: list[int] = []
    pulled: list[int] = []

    def source():
        for index in range(100):
            pulled.append(index)
            yield b"q" * MiB

    with pytest.raises(Cancelled):
        store.write("c/full.snapshot", source(), on_progress=progress.append,
                    should_continue=lambda: len(progress) < 13)

    assert progress[-1] == 13 * MiB and len(pulled) == 13  # stopped between chunks, nothing more pulled
    assert incomplete_uploads(admin, s3_bucket) == []
    assert object_keys(admin, s3_bucket) == []


class Interrupt(BaseException):
    """Like dramatiq's time-limit/shutdown interrupts: BaseExceptions, which minio's cleanup ignores."""


def test_interrupt_after_parts_were_uploaded_leaves_nothing(store: S3Storage, admin, s3_bucket) -> None:
    def interrupted():
        yield from chunks(12)
        assert incomplete_uploads(admin, s3_bucket) != []
        raise Interrupt()

    with pytest.raises(Interrupt):
        store.write("c/full.snapshot", interrupted())

    assert incomplete_uploads(admin, s3_bucket) == []
    assert object_keys(admin, s3_bucket) == []


@pytest.fixture
def doomed_server(moto):
    """A second moto server sharing the in-process moto state, which a test can stop midway."""
    server = moto.second_server()
    yield server
    server.stop()  # stopping an already stopped server is harmless


@pytest.mark.parametrize("source_fails", [True, False])
def test_storage_going_down_mid_upload(s3_server, s3_bucket, admin, caplog, doomed_server,
                                       source_fails: bool) -> None:
    """The storage dies mid-upload, so minio's abort fails too: the caller sees the first error (the
    source's, or the storage's), a warning names the key, and the incomplete upload is what remains."""
    host, port = doomed_server.get_host_and_port()
    store = S3Storage(f"http://{host}:{port}", s3_bucket, s3_server.region, s3_server.access_key,
                      s3_server.secret_key, part_size=PART)

    def source():
        yield from chunks(12)
        doomed_server.stop()
        if source_fails:
            raise RuntimeError("source failed while the storage went down")
        yield from chunks(12)

    expected = (RuntimeError, "source failed") if source_fails else (StorageUnavailable, "cannot connect to")
    with pytest.raises(expected[0], match=expected[1]):
        store.write("c/full.snapshot", source())

    assert "could not abort an incomplete upload of 'c/full.snapshot'" in caplog.text
    assert s3_server.secret_key not in caplog.text
    leftover = incomplete_uploads(admin, s3_bucket)  # seen through the session server
    assert [u["Key"] for u in leftover] == ["c/full.snapshot"]
    admin.abort_multipart_upload(Bucket=s3_bucket, Key="c/full.snapshot", UploadId=leftover[0]["UploadId"])


def test_failure_before_the_first_part_leaves_nothing(store: S3Storage, admin, s3_bucket) -> None:
    def failing():
        yield b"x" * 1000
        raise RuntimeError("early")

    with pytest.raises(RuntimeError, match="early"):
        store.write("c/x", failing())
    assert incomplete_uploads(admin, s3_bucket) == [] and object_keys(admin, s3_bucket) == []


def test_abort_incomplete_cleans_up_after_a_killed_worker(store: S3Storage, admin, s3_bucket) -> None:
    # What a SIGKILLed worker leaves: multipart uploads that were started and never completed or aborted.
    for key in ("c/b1/full.snapshot", "c/b1/shard-0.snapshot", "c/b2/full.snapshot"):
        upload = admin.create_multipart_upload(Bucket=s3_bucket, Key=key)
        admin.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                          Body=b"x" * PART)
    store.write_bytes("c/b1/manifest.json", b"{}")

    assert store.abort_incomplete("c/b1/") == 2

    assert [u["Key"] for u in incomplete_uploads(admin, s3_bucket)] == ["c/b2/full.snapshot"]
    assert object_keys(admin, s3_bucket) == ["c/b1/manifest.json"]
    assert store.abort_incomplete("c/b1/") == 0
    with pytest.raises(StorageError, match="empty prefix"):
        store.abort_incomplete("")


def test_failed_overwrite_keeps_the_previous_object(store: S3Storage, admin, s3_bucket) -> None:
    store.write("c/full.snapshot", chunks(6))
    before = hashlib.sha256(store.read_bytes("c/full.snapshot")).hexdigest()

    def failing():
        yield from chunks(11)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write("c/full.snapshot", failing())

    assert hashlib.sha256(store.read_bytes("c/full.snapshot")).hexdigest() == before
    assert incomplete_uploads(admin, s3_bucket) == []


def test_write_to_a_missing_bucket(s3_server, admin) -> None:
    store = S3Storage(s3_server.endpoint, "no-such-bucket-qbm", s3_server.region, s3_server.access_key,
                      s3_server.secret_key, part_size=PART)
    with pytest.raises(BucketNotFound, match="bucket 'no-such-bucket-qbm' does not exist"):
        store.write("x", chunks(12))


# -- list / stat / delete / read ----------------------------------------------------------------------------


def test_list_stat_exists_and_read(store: S3Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    for key, data in [("b/2", b"22"), ("a/1", b"1"), ("a/sub/3", b"333"), ("ab", b"4444"), ("a.txt", b"5")]:
        store.write_bytes(key, data)

    assert [o.key for o in store.list()] == ["a.txt", "a/1", "a/sub/3", "ab", "b/2"]
    assert [o.key for o in store.list("a/")] == ["a/1", "a/sub/3"]
    assert [o.key for o in store.list("a")] == ["a.txt", "a/1", "a/sub/3", "ab"]
    assert list(store.list("nothing/here/")) == []

    info = store.stat("a/sub/3")
    assert (info.key, info.size) == ("a/sub/3", 3)
    assert info.modified.tzinfo is not None and info.modified >= before.replace(microsecond=0)
    assert {o.key: o.size for o in store.list("b")} == {"b/2": 2}

    assert store.exists("ab") and not store.exists("a/2") and not store.exists("a")
    assert store.read_bytes("ab") == b"4444"
    with store.open("a/sub/3") as fh:
        assert fh.read(2) == b"33" and fh.read() == b"3"


def test_open_streams_and_can_be_closed_early(store: S3Storage) -> None:
    store.write("big", chunks(8))
    with store.open("big") as fh:
        assert fh.read(10) == b"\x00" * 10
    # the connection went back to the pool in a usable state
    assert store.read_bytes("big", max_size=8 * MiB)[-1:] == b"\x07"


def test_missing_objects(store: S3Storage) -> None:
    for operation in (lambda: store.stat("missing"), lambda: store.open("missing"),
                      lambda: store.read_bytes("missing")):
        with pytest.raises(ObjectNotFound, match="no object 'missing' in bucket"):
            operation()


def test_read_bytes_refuses_big_objects(store: S3Storage) -> None:
    store.write("big", chunks(3))
    with pytest.raises(StorageError, match="larger than"):
        store.read_bytes("big", max_size=2 * MiB)


def test_delete_and_delete_prefix(store: S3Storage, admin, s3_bucket) -> None:
    for key in ("c/s1/full", "c/s1/manifest.json", "c/s10/full", "c/s2/full", "d/x"):
        store.write_bytes(key, b"x")

    store.delete("d/x")
    store.delete("d/x")  # already gone: no error
    store.delete_prefix("c/s1/")
    assert object_keys(admin, s3_bucket) == ["c/s10/full", "c/s2/full"]

    store.delete_prefix("c/")
    store.delete_prefix("c/")
    assert object_keys(admin, s3_bucket) == []

    store.write_bytes("keep", b"1")
    with pytest.raises(StorageError, match="empty prefix"):
        store.delete_prefix("")
    assert object_keys(admin, s3_bucket) == ["keep"]


def test_delete_prefix_beyond_one_batch(store: S3Storage, admin, s3_bucket) -> None:
    for index in range(1005):  # S3 deletes at most 1000 keys per request
        admin.put_object(Bucket=s3_bucket, Key=f"many/{index:04d}", Body=b"")
    store.write_bytes("other", b"1")

    store.delete_prefix("many/")

    assert object_keys(admin, s3_bucket) == ["other"]


@pytest.mark.parametrize("key", ["", "/abs", "../x", "a/../b", "a//b", "a/", "a\x00b", "a\\b"])
def test_bad_keys_are_rejected(store: S3Storage, admin, s3_bucket, key: str) -> None:
    for operation in (lambda: store.write_bytes(key, b"x"), lambda: store.stat(key),
                      lambda: store.open(key), lambda: store.delete(key),
                      lambda: store.presigned_get_url(key, timedelta(minutes=1))):
        with pytest.raises(InvalidKey):
            operation()
    assert object_keys(admin, s3_bucket) == []


# -- presigned URLs -----------------------------------------------------------------------------------------


def test_presigned_url_downloads_the_object(store: S3Storage, s3_server) -> None:
    store.write("c/snap shot+1.snapshot", chunks(6))

    url = store.presigned_get_url("c/snap shot+1.snapshot", timedelta(minutes=10))

    assert s3_server.secret_key not in url
    response = requests.get(url, timeout=30)  # no credentials: the URL alone grants access
    assert response.status_code == 200
    expected = hashlib.sha256(b"".join(chunks(6))).hexdigest()
    assert hashlib.sha256(response.content).hexdigest() == expected


def test_presigned_url_expiry_is_bounded(store: S3Storage) -> None:
    for expires in (timedelta(0), timedelta(days=8)):
        with pytest.raises(ValueError, match="between 1 second and 7 days"):
            store.presigned_get_url("x", expires)


# -- test() -------------------------------------------------------------------------------------------------


def test_connectivity_check_succeeds_and_leaves_nothing(store: S3Storage, admin, s3_bucket,
                                                         s3_server) -> None:
    ok, message = store.test()

    assert ok, message
    assert message == (f"wrote, read back and removed a test object in bucket {s3_bucket!r} "
                       f"at {s3_server.endpoint}")
    assert object_keys(admin, s3_bucket) == [] and incomplete_uploads(admin, s3_bucket) == []


def test_connectivity_check_missing_bucket(s3_server) -> None:
    store = S3Storage(s3_server.endpoint, "qbm-missing-bucket", s3_server.region, s3_server.access_key,
                      s3_server.secret_key)

    assert store.test() == (False, f"bucket 'qbm-missing-bucket' does not exist at {s3_server.endpoint}")


def test_connectivity_check_unreachable_endpoint(closed_port: int, s3_server) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    store = S3Storage(endpoint, "bkt", "us-east-1", "AK", s3_server.secret_key)

    ok, message = store.test()

    assert not ok
    assert message == f"cannot connect to {endpoint}: Connection refused"
    with pytest.raises(StorageUnavailable, match=f"cannot connect to {endpoint}"):
        store.stat("x")


def test_region_auto_detection(s3_server, s3_bucket) -> None:
    # The bucket is in eu-central-1 and S3 (moto, here) refuses requests signed for any other region: this works
    # only if the client asks for the bucket's region first.
    store = S3Storage(s3_server.endpoint, s3_bucket, None, s3_server.access_key, s3_server.secret_key)
    assert store.test() == (True, f"wrote, read back and removed a test object in bucket {s3_bucket!r} "
                                  f"at {s3_server.endpoint}")


def refusals(s3_server) -> dict[str, tuple[dict[str, str], type[StorageError], str]]:
    """Settings S3 refuses (what to change, the error, the start of its sentence)."""
    endpoint = s3_server.endpoint
    return {
        "wrong secret key": ({"secret_key": s3_server.secret_key[:-4] + "XXXX"}, PermissionDenied,
                             f"the secret key does not match the access key ({endpoint} rejected the request "
                             "signature)"),
        "unknown access key": ({"access_key": "AKIAQBMTESTUNKNOWN00"}, PermissionDenied,
                               f"the access key is not known to {endpoint}"),
        "wrong region": ({"region": "us-east-1"}, WrongRegion, f"{endpoint} rejected the request "),
    }


@pytest.mark.parametrize("case", ["wrong secret key", "unknown access key", "wrong region"])
def test_refused_settings_fail_the_check_and_every_operation_with_a_sentence(s3_server, s3_bucket, admin,
                                                                             case: str) -> None:
    admin.put_object(Bucket=s3_bucket, Key="kept", Body=b"data")
    change, error, sentence = refusals(s3_server)[case]
    settings = {"region": s3_server.region, "access_key": s3_server.access_key,
                "secret_key": s3_server.secret_key, **change}
    store = S3Storage(s3_server.endpoint, s3_bucket, settings["region"], settings["access_key"],
                      settings["secret_key"], part_size=PART)

    ok, message = store.test()

    assert not ok and message.startswith(sentence), message
    if case == "wrong region":
        assert message.endswith("the region 'us-east-1' is wrong; expecting 'eu-central-1' (check the region; "
                                "configured: us-east-1)"), message
    for operation in (lambda: store.write("c/full.snapshot", chunks(12)), lambda: store.write_bytes("x", b"1"),
                      lambda: store.read_bytes("kept"), lambda: list(store.list()),
                      lambda: store.delete_prefix("c/")):
        with pytest.raises(error) as info:
            operation()
        assert str(info.value).startswith(sentence), str(info.value)
        assert s3_server.secret_key not in all_messages(info.value)
    assert object_keys(admin, s3_bucket) == ["kept"] and incomplete_uploads(admin, s3_bucket) == []


# -- configuration and secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint, fragment", [
    ("127.0.0.1:9000", "must start with http:// or https://"),
    ("ftp://host", "must start with http:// or https://"),
    ("http://host:9000/bucket", "must not contain a path"),
    ("http://user:pw@host:9000", "must not contain credentials"),
    ("http://host:notaport", "invalid port"),
    ("", "needs an endpoint"),
])
def test_bad_endpoints_are_refused_at_construction(endpoint: str, fragment: str) -> None:
    with pytest.raises(StorageError, match=fragment) as info:
        S3Storage(endpoint, "bkt", None, "AK", "very-secret-key-123")
    assert "very-secret-key-123" not in all_messages(info.value)


def test_https_endpoint_is_secure_and_bucket_names_are_checked() -> None:
    store = S3Storage("https://s3.eu-west-1.amazonaws.com", "my-bucket", "eu-west-1", "AK", "SK-secret")
    assert store.endpoint == "https://s3.eu-west-1.amazonaws.com"
    assert store._client._base_url.is_https
    for bucket in ("ab", "bad..name", "192.168.1.1", "bad/name"):
        with pytest.raises(StorageError, match=f"invalid bucket name '{bucket}'"):
            S3Storage("https://s3.amazonaws.com", bucket, None, "AK", "SK-secret")


def test_from_config_builds_a_working_s3_storage(s3_server, s3_bucket) -> None:
    cfg = {"id": "st1", "name": "moto", "type": "s3", "path": None, "s3_endpoint": s3_server.endpoint,
           "s3_bucket": s3_bucket, "s3_region": s3_server.region, "s3_access_key": s3_server.access_key,
           "s3_secret_key": s3_server.secret_key, "is_default": True}

    store = from_config(cfg, allowed_roots=[])

    assert isinstance(store, S3Storage)
    assert store.test()[0]


def test_secret_key_never_appears_in_errors_or_repr(s3_server, s3_bucket, closed_port: int) -> None:
    secret = s3_server.secret_key
    good = S3Storage(s3_server.endpoint, s3_bucket, s3_server.region, s3_server.access_key, secret)
    missing = S3Storage(s3_server.endpoint, "qbm-gone", s3_server.region, s3_server.access_key, secret)
    dead = S3Storage(f"http://127.0.0.1:{closed_port}", s3_bucket, "us-east-1", s3_server.access_key, secret)

    texts = [repr(good), str(good), repr(dead), good.test()[1], missing.test()[1], dead.test()[1]]
    failures = [
        lambda: good.stat("nope"), lambda: good.read_bytes("nope"), lambda: missing.write_bytes("x", b"1"),
        lambda: list(missing.list()), lambda: missing.delete_prefix("a/"), lambda: dead.stat("x"),
        lambda: dead.write("x", chunks(2)), lambda: list(dead.list()),
    ]
    for failure in failures:
        with pytest.raises(StorageError) as info:
            failure()
        texts += [str(info.value), repr(info.value), all_messages(info.value)]

    assert all(secret not in text for text in texts)
    assert "bucket 'qbm-gone' does not exist" in missing.test()[1]
