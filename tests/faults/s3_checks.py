"""What the fault tests look at in the bucket, through boto3 (independent of the minio client under test)."""

from __future__ import annotations

import json

from shared.domain.manifest import manifest_key
from tests.engine.test_roundtrip import sha256_of, storage_backend


def qdrant_checksums(client, collection: str = "big") -> dict[str, str]:  # noqa: ANN001
    """Snapshot name -> sha256 as Qdrant lists them (the source of truth for what a backup must hold)."""
    url = f"/api/v1/collections/{collection}/snapshots"
    return {s["name"]: s["checksum"] for s in client.get(url).get_json()["result"]}


def multipart_uploads(boto_s3, bucket: str) -> list[dict]:  # noqa: ANN001
    return boto_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def object_keys(boto_s3, bucket: str) -> list[str]:  # noqa: ANN001
    return sorted(o["Key"] for o in boto_s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def part_uploaded(boto_s3, bucket: str) -> bool:  # noqa: ANN001
    """True once some multipart upload in ``bucket`` has a part stored: the moment to break things."""
    return any(boto_s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
               for u in multipart_uploads(boto_s3, bucket))


def assert_one_whole_backup(app, boto_s3, bucket: str, storage_id: str, done: dict,  # noqa: ANN001
                            source: dict[str, str], collection: str = "big") -> dict:
    """The job completed and left exactly one backup: no incomplete upload, the snapshot and its manifest only,
    stored bytes hashing to what the manifest and Qdrant say, sizes agreeing. Returns the manifest."""
    assert done["status"] == "completed", done
    backup_id = done["snapshot_name"]
    assert multipart_uploads(boto_s3, bucket) == []
    assert object_keys(boto_s3, bucket) == [f"{collection}/{backup_id}/collection.snapshot",
                                            f"{collection}/{backup_id}/manifest.json"]
    storage = storage_backend(app, storage_id)
    manifest = json.loads(storage.read_bytes(manifest_key(collection, backup_id)))
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == source[manifest["qdrant_snapshot_name"]]
    assert manifest["size"] == storage.stat(manifest["key"]).size == done["metadata"]["size"]
    return manifest
