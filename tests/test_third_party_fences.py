"""The three places QBM reaches into a library's internals, each fenced in one module (issue: third-party
internals fenced). Each test fails loudly, naming what moved, when an upgrade changes what QBM relies on --
instead of uploads failing at run time, backups silently slowing down, or the reaper missing queued messages.
"""

from __future__ import annotations

import json

import dramatiq
import pytest
from minio import Minio

from shared.adapters.qdrant import QdrantClient
from shared.adapters.storage import minio_multipart
from shared.adapters.urllib3_stream import undecoded_stream
from shared.pipeline import dramatiq_keys
from shared.pipeline.broker import make_broker
from shared.pipeline.dispatch import send_step
from shared.runtime.config import load_config


def test_minio_private_multipart_calls_are_where_the_s3_backend_calls_them():
    assert minio_multipart.mismatches() == []


def test_the_minio_check_names_a_moved_method(monkeypatch):
    monkeypatch.delattr(Minio, "_upload_part")
    monkeypatch.setattr(Minio, "_abort_multipart_upload", lambda self, bucket_name, key, upload_id: None)
    assert minio_multipart.mismatches() == ["minio.Minio._upload_part is gone",
                                            "minio.Minio._abort_multipart_upload has no parameter 'object_name'"]


def test_downloads_read_below_urllib3(qdrant):
    qdrant.create_collection("c", size_bytes=300_000)
    with QdrantClient(qdrant.url) as client:
        created = client.create_snapshot("c")
        download = client.download_snapshot("c", created["name"])
        with download:
            # The zero-copy path of SnapshotDownload.readinto is reachable with the urllib3 installed here.
            assert undecoded_stream(download._response) is not None
        with client.download_snapshot("c", created["name"]) as download:
            # Once urllib3 itself has read from the body, the fast path is refused (it would skip bytes).
            assert len(download._response.raw.read(10)) == 10
            assert undecoded_stream(download._response) is None


@pytest.fixture
def broker(redis_url, key_prefix):
    config = load_config({"QBM_REDIS_URL": redis_url, "QBM_KEY_PREFIX": key_prefix})
    broker = make_broker(config)
    yield broker
    broker.close()


def test_dramatiq_keeps_ready_and_delayed_messages_where_the_reaper_and_metrics_look(broker, redis_client,
                                                                                     key_prefix):
    dramatiq.set_broker(broker)
    send_step(broker, "backup", "create", "job-ready")
    send_step(broker, "backup", "transfer", "job-delayed", delay_ms=60_000)

    ready_ids = [m.decode() for m in redis_client.lrange(dramatiq_keys.queue_list(key_prefix, "backups"), 0, -1)]
    ready = {k.decode(): json.loads(v) for k, v in
             redis_client.hgetall(dramatiq_keys.messages_hash(key_prefix, "backups")).items()}
    assert [ready[i]["args"] for i in ready_ids] == [["job-ready"]]

    delayed_ids = [m.decode() for m in
                   redis_client.lrange(dramatiq_keys.queue_list(key_prefix, "backups", delayed=True), 0, -1)]
    delayed = {k.decode(): json.loads(v) for k, v in
               redis_client.hgetall(dramatiq_keys.messages_hash(key_prefix, "backups", delayed=True)).items()}
    [message] = [delayed[i] for i in delayed_ids]
    assert message["args"] == ["job-delayed"] and isinstance(message["options"]["eta"], int)
