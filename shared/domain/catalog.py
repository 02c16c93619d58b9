"""The backup catalog: what backups a storage backend holds, read from their manifests, not from Redis.

Storage is the truth: a backup exists exactly when its manifest exists (:mod:`shared.domain.manifest`), so the
catalog survives losing Redis, and a backup copied into a bucket by hand shows up too.

Cost: one listing of the backend (under ``{collection}/`` when a collection is given) and one manifest read
per backup returned. Sorting needs no reads because a backup id starts with its UTC creation time
(``20261124T021500Z-1a2b3c4d``): a page of the newest backups reads ``limit`` manifests whatever the total.
Finding a backup by id alone scans the listing for ``*/{backup_id}/manifest.json``; naming the collection
makes it a single read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from shared.adapters.storage.base import Storage
from shared.domain.manifest import MANIFEST_NAME, Manifest, ManifestError, backup_prefix, manifest_key, read_manifest

log = logging.getLogger("qbm.catalog")


class BackupNotFound(LookupError):
    def __init__(self, backup_id: str, where: str) -> None:
        super().__init__(f"backup {backup_id} not found in {where}")
        self.backup_id = backup_id


@dataclass(frozen=True, order=True)
class BackupRef:
    """Where one manifest sits: ``{collection}/{backup_id}/manifest.json``."""

    backup_id: str
    collection: str


def manifest_refs(storage: Storage, collection: str | None = None) -> Iterator[BackupRef]:
    """Every backup in ``storage`` (of one collection, if given), from the listing alone."""
    for info in storage.list(f"{collection}/" if collection else ""):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST_NAME and parts[0] and parts[1]:
            yield BackupRef(backup_id=parts[1], collection=parts[0])


def entry(manifest: Manifest, storage_id: str) -> dict[str, Any]:
    """The public Backup object: the manifest plus the storage it was found in."""
    data = asdict(manifest)
    data["storage_id"] = storage_id
    return data


def read_all(storage: Storage, refs: list[BackupRef]) -> list[Manifest]:
    """Manifests for ``refs``; an unreadable one is logged and left out (it is not a usable backup)."""
    out = []
    for ref in refs:
        try:
            out.append(read_manifest(storage, ref.collection, ref.backup_id))
        except ManifestError as exc:
            log.warning("skipping %s/%s: %s", ref.collection, ref.backup_id, exc)
    return out


def list_backups(storage: Storage, *, collection: str | None = None, page: int = 1, limit: int = 20
                 ) -> tuple[list[Manifest], int]:
    """One page of backups, newest first, and how many there are."""
    refs = sorted(manifest_refs(storage, collection), reverse=True)
    start = (page - 1) * limit
    return read_all(storage, refs[start:start + limit]), len(refs)


def find_backup(storage: Storage, backup_id: str, *, collection: str | None = None) -> Manifest:
    """The manifest of ``backup_id``: one read when the collection is known, else a scan of the listing."""
    if collection is not None:
        candidates = [BackupRef(backup_id=backup_id, collection=collection)]
    else:
        candidates = [ref for ref in manifest_refs(storage) if ref.backup_id == backup_id]
    for ref in sorted(candidates):
        try:
            return read_manifest(storage, ref.collection, ref.backup_id)
        except ManifestError:
            continue
    raise BackupNotFound(backup_id, "this storage backend" if collection is None else f"collection {collection}")


def delete_backup(storage: Storage, manifest: Manifest) -> None:
    """Manifest first, then the data: an interruption leaves an unlisted leftover, never a listed backup
    whose snapshot is gone."""
    storage.delete(manifest_key(manifest.collection, manifest.backup_id))
    storage.delete_prefix(backup_prefix(manifest.collection, manifest.backup_id))
