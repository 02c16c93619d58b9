"""Put backups into a storage backend the way a worker leaves them (snapshot file, then manifest), with
chosen creation times, for catalog and retention tests that should not wait for real backups."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from shared.adapters.storage.base import Storage
from shared.domain.manifest import Manifest, snapshot_key, write_manifest
from shared.runtime.timeutil import to_iso


def put_backup(storage: Storage, collection: str, created: datetime, *, shard_id: int | None = None,
               payload: bytes | None = None, schedule_id: str | None = None) -> Manifest:
    backup_id = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
    data = payload if payload is not None else secrets.token_bytes(64)
    key = snapshot_key(collection, backup_id, shard_id)
    storage.write_bytes(key, data)
    manifest = Manifest(
        backup_id=backup_id,
        job_id=f"job-{backup_id}",
        type="backup" if shard_id is None else "shard_backup",
        collection=collection,
        shard_id=shard_id,
        qdrant_snapshot_name=f"{collection}-{backup_id}.snapshot",
        key=key,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        created_at=to_iso(created),
        qdrant_version="1.19.0",
        points_count=10,
        qbm_version="test",
        schedule_id=schedule_id,
    )
    write_manifest(storage, manifest)
    return manifest
