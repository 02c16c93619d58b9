"""The backup catalog: what backups a storage backend holds, read from their manifests, not from Redis.

Storage is the truth: a backup exists exactly when its manifest exists (:mod:`shared.domain.manifest`), so the
catalog survives losing Redis, and a backup copied into a bucket by hand shows up too.

Cost: one listing of the backend (under ``{collection}/`` when a collection is given) and one manifest read
per backup returned. Sorting needs no reads because a backup id starts with its UTC creation time
(``20261124T021500Z-1a2b3c4d``): a page of the newest backups reads ``limit`` manifests whatever the total.
Finding a backup by id alone scans the listing for ``*/{backup_id}/manifest.json``; naming the collection
makes it a single read.

**Pins.** A pinned backup has a small ``pinned.json`` marker next to its manifest. The pin lives with the backup
in storage, not in Redis, for the same reasons the catalog does: it survives losing Redis (a pin lost with Redis
would let retention delete what someone chose to keep), it goes with the backup when the directory is copied
elsewhere, it is seen by every QBM reading that storage, and deleting the backup removes it too. The listing
that finds the manifests shows the markers as well, so reading pins costs no extra request.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.adapters.storage.base import Storage
from shared.domain.manifest import MANIFEST_NAME, Manifest, ManifestError, backup_prefix, manifest_key, read_manifest
from shared.runtime.timeutil import utcnow_iso

log = logging.getLogger("qbm.catalog")


class BackupNotFound(LookupError):
    def __init__(self, backup_id: str, where: str) -> None:
        super().__init__(f"backup {backup_id} not found in {where}")
        self.backup_id = backup_id


PIN_NAME = "pinned.json"


class BackupPinned(Exception):
    def __init__(self, backup_id: str) -> None:
        super().__init__(f"backup {backup_id} is pinned; unpin it first (DELETE .../pin or `qbm backups unpin`)")
        self.backup_id = backup_id


@dataclass(frozen=True, order=True)
class BackupRef:
    """Where one manifest sits: ``{collection}/{backup_id}/manifest.json``; ``pinned`` when a pin marker sits
    beside it."""

    backup_id: str
    collection: str
    pinned: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Listed:
    """A backup as the catalog shows it: its manifest, and whether it is pinned."""

    manifest: Manifest
    pinned: bool


def pin_key(collection: str, backup_id: str) -> str:
    return backup_prefix(collection, backup_id) + PIN_NAME


def manifest_refs(storage: Storage, collection: str | None = None) -> list[BackupRef]:
    """Every backup in ``storage`` (of one collection, if given), from one listing, with its pin state."""
    found: list[tuple[str, str]] = []
    pins: set[tuple[str, str]] = set()
    for info in storage.list(f"{collection}/" if collection else ""):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[0] and parts[1]:
            if parts[2] == MANIFEST_NAME:
                found.append((parts[0], parts[1]))
            elif parts[2] == PIN_NAME:
                pins.add((parts[0], parts[1]))
    return [BackupRef(backup_id=b, collection=c, pinned=(c, b) in pins) for c, b in found]


def entry(listed: Listed, storage_id: str) -> dict[str, Any]:
    """The public Backup object: the manifest, the storage it was found in, and its pin state."""
    data = asdict(listed.manifest)
    data["storage_id"] = storage_id
    data["pinned"] = listed.pinned
    return data


def read_all(storage: Storage, refs: list[BackupRef]) -> list[Listed]:
    """Manifests for ``refs``; an unreadable one is logged and left out (it is not a usable backup)."""
    out = []
    for ref in refs:
        try:
            out.append(Listed(read_manifest(storage, ref.collection, ref.backup_id), ref.pinned))
        except ManifestError as exc:
            log.warning("skipping %s/%s: %s", ref.collection, ref.backup_id, exc)
    return out


def list_backups(storage: Storage, *, collection: str | None = None, page: int = 1, limit: int = 20
                 ) -> tuple[list[Listed], int]:
    """One page of backups, newest first, and how many there are."""
    refs = sorted(manifest_refs(storage, collection), reverse=True)
    start = (page - 1) * limit
    return read_all(storage, refs[start:start + limit]), len(refs)


def find_backup(storage: Storage, backup_id: str, *, collection: str | None = None) -> Listed:
    """The manifest of ``backup_id`` and its pin state: one read and one stat when the collection is known,
    else a scan of the listing."""
    if collection is not None:
        candidates = [BackupRef(backup_id=backup_id, collection=collection)]
    else:
        candidates = [ref for ref in manifest_refs(storage) if ref.backup_id == backup_id]
    for ref in sorted(candidates):
        try:
            manifest = read_manifest(storage, ref.collection, ref.backup_id)
        except ManifestError:
            continue
        return Listed(manifest, is_pinned(storage, manifest))
    raise BackupNotFound(backup_id, "this storage backend" if collection is None else f"collection {collection}")


def is_pinned(storage: Storage, manifest: Manifest) -> bool:
    return storage.exists(pin_key(manifest.collection, manifest.backup_id))


def pin(storage: Storage, manifest: Manifest) -> None:
    """Pin a backup (idempotent): retention never deletes it, nor does DELETE, until it is unpinned."""
    marker = {"backup_id": manifest.backup_id, "pinned_at": utcnow_iso()}
    storage.write_bytes(pin_key(manifest.collection, manifest.backup_id), json.dumps(marker).encode())


def unpin(storage: Storage, manifest: Manifest) -> None:
    """Remove the pin (idempotent)."""
    storage.delete(pin_key(manifest.collection, manifest.backup_id))


def delete_backup(storage: Storage, manifest: Manifest) -> None:
    """Manifest first, then the data: an interruption leaves an unlisted leftover, never a listed backup
    whose snapshot is gone. A pinned backup is refused (:class:`BackupPinned`), checked just before."""
    if is_pinned(storage, manifest):
        raise BackupPinned(manifest.backup_id)
    storage.delete(manifest_key(manifest.collection, manifest.backup_id))
    storage.delete_prefix(backup_prefix(manifest.collection, manifest.backup_id))
