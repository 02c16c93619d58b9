"""S3 going wrong under a backup.

* S3 becomes unreachable in the middle of a multipart upload (every connection dropped, new ones refused, as
  when the endpoint's host goes down). That is transient: the step is retried with backoff, and once S3 is
  back the backup completes -- with the half-done multipart upload of the failed attempt aborted, exactly one
  object and one manifest, and nothing listed as a backup before then. (An S3 that stays down fails the job
  after 7 attempts, about two minutes of backoff, with S3's message; that takes too long for this suite.)
* The bucket was deleted after the storage backend was tested and saved. That will not fix itself, so the job
  fails at once, naming the bucket, and nothing is created.
* S3 refuses the credentials (a wrong secret key, an unknown access key) or the region the requests are signed
  for. That will not fix itself either: "test connection" says why, and a backup fails at once with the same
  sentence.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engine.conftest import wait_for_job, wait_until
from tests.engine.test_roundtrip import post_job, register_storage
from tests.faults.netproxy import TcpProxy
from tests.faults.s3_checks import (
    assert_one_whole_backup,
    multipart_uploads,
    object_keys,
    part_uploaded,
    qdrant_checksums,
)

MiB = 1024 * 1024


@pytest.fixture
def s3_proxy(s3_server) -> Iterator[TcpProxy]:  # noqa: ANN001
    host, port = s3_server.host.split(":")
    proxy = TcpProxy(host, int(port)).start()
    yield proxy
    proxy.stop()


def test_s3_outage_mid_upload_is_retried_and_completes_once_s3_is_back(app, client, jobs, qdrant, worker,  # noqa: ANN001
                                                                         engine_config, s3_server, s3_bucket,
                                                                         s3_proxy, boto_s3):
    # QBM reaches S3 only through the proxy; the test looks at moto directly.
    via_proxy = s3_server.through(s3_proxy.endpoint, f"127.0.0.1:{s3_proxy.port}")
    storage_cfg = register_storage(client, "s3", engine_config, via_proxy, s3_bucket)
    qdrant.create_collection("big", points=64, size_bytes=40 * MiB)
    qdrant.faults.throttle(8 * MiB)
    job = post_job(client, type="backup", collection_name="big", metadata={"keep_on_qdrant": True})

    wait_until(lambda: part_uploaded(boto_s3, s3_bucket), timeout=30, what="a multipart upload with a part in S3")
    s3_proxy.cut()
    wait_until(lambda: "step failed, will retry" in worker.log(), timeout=30, what="the transfer to fail")
    # The reason names S3's endpoint and what went wrong (here: "cannot connect to ...: Connection refused").
    retried = [line for line in worker.log().splitlines() if "step failed, will retry" in line]
    assert s3_proxy.endpoint in retried[0], retried
    during = jobs.get(job["id"])
    assert during.status == "running" and during.error is None
    # The failed attempt could not abort its upload (S3 was gone): an incomplete upload, no object, no manifest.
    assert len(multipart_uploads(boto_s3, s3_bucket)) == 1
    assert object_keys(boto_s3, s3_bucket) == []

    qdrant.faults.throttle(None)
    s3_proxy.restore()
    done = wait_for_job(jobs, job["id"], timeout=60, worker=worker)
    # keep_on_qdrant: the snapshot is still listed on Qdrant, with the checksum the stored bytes must have.
    assert_one_whole_backup(app, boto_s3, s3_bucket, storage_cfg["id"], done, qdrant_checksums(client))
    catalog = client.get("/api/v1/backups").get_json()["result"]
    assert [b["backup_id"] for b in catalog["items"]] == [done["snapshot_name"]]


def test_bucket_deleted_after_the_test_fails_the_backup_at_once(client, jobs, qdrant, worker, engine_config,  # noqa: ANN001
                                                               s3_server, s3_bucket, boto_s3):
    body = {"name": "s3", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": s3_bucket,
            "s3_region": s3_server.region, "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key}
    tested = client.post("/api/v1/storage/test", json=body).get_json()["result"]
    assert tested["success"] is True, tested
    register_storage(client, "s3", engine_config, s3_server, s3_bucket)
    boto_s3.delete_bucket(Bucket=s3_bucket)
    qdrant.create_collection("docs", points=10, size_bytes=1 * MiB)

    job = post_job(client, type="backup", collection_name="docs")
    done = wait_for_job(jobs, job["id"], timeout=20, worker=worker)
    assert done["status"] == "failed"
    assert f"bucket {s3_bucket!r} does not exist" in done["error"], done["error"]
    assert "will retry" not in worker.log()  # failed on the first attempt, not after minutes of backoff
    # Nothing made the bucket again, so no object and no manifest exist anywhere.
    assert s3_bucket not in [b["Name"] for b in boto_s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("case, change, sentence", [
    ("wrong secret key", {"s3_secret_key": "wrong-secret-key-for-the-access-key"},
     "the secret key does not match the access key ({endpoint} rejected the request signature)"),
    ("unknown access key", {"s3_access_key": "AKIAQBMTESTUNKNOWN00"}, "the access key is not known to {endpoint}"),
    ("wrong region", {"s3_region": "us-east-1"},
     "the region 'us-east-1' is wrong; expecting 'eu-central-1' (check the region; configured: us-east-1)"),
])
def test_refused_credentials_or_region_fail_the_test_and_the_backup_at_once(  # noqa: ANN001
        client, jobs, qdrant, worker, s3_server, s3_bucket, boto_s3, case: str, change: dict, sentence: str):
    """S3 checks who signed a request and for which region: a backend S3 refuses fails "test connection" and a
    backup with S3's reason in a sentence (no traceback, no retry), and nothing is left in the bucket."""
    expected = sentence.format(endpoint=s3_server.endpoint)
    body = {"name": "s3", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": s3_bucket,
            "s3_region": s3_server.region, "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key, **change}
    tested = client.post("/api/v1/storage/test", json=body)
    assert tested.status_code == 200, tested.get_json()
    assert tested.get_json()["result"]["success"] is False
    assert expected in tested.get_json()["result"]["message"], tested.get_json()
    saved = client.post("/api/v1/storage", json={**body, "is_default": True})
    assert saved.status_code == 201, saved.get_json()
    qdrant.create_collection("docs", points=10, size_bytes=1 * MiB)

    job = post_job(client, type="backup", collection_name="docs")
    done = wait_for_job(jobs, job["id"], timeout=20, worker=worker)

    assert done["status"] == "failed", done
    assert expected in done["error"], done["error"]
    assert "Traceback" not in done["error"] and "will retry" not in worker.log()  # at once, not after backoff
    assert "Traceback" not in worker.log()
    assert s3_server.secret_key not in done["error"] + worker.log()
    assert object_keys(boto_s3, s3_bucket) == [] and multipart_uploads(boto_s3, s3_bucket) == []
