"""Where backups live in storage and what their manifest says.

Layout: ``{collection}/{backup_id}/`` holding the snapshot file (``collection.snapshot`` or
``shard-{id}.snapshot``), ``manifest.json`` and, while the backup is pinned, ``pinned.json``
(:mod:`shared.domain.catalog`). As in pgBackRest, the manifest is written last and a
backup exists only once its manifest exists: a directory without one is an unfinished transfer, never
listed, never restored.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from shared.adapters.storage.base import ObjectNotFound, Storage
from shared.runtime.timeutil import utcnow

MANIFEST_NAME = "manifest.json"
#: Manifest fields older manifests may lack.
_OPTIONAL = ("format", "schedule_id", "kind", "shards", "collection_config", "payload_schema", "aliases", "topology")
BACKUP_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or does not describe the backup it sits beside."""


def qbm_version() -> str:
    try:
        return version("qdrant-backup-manager")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def new_backup_id() -> str:
    """``20261124T021500Z-1a2b3c4d``: sorts by creation time, unique with 32 random bits per second."""
    return f"{utcnow().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def snapshot_file_name(shard_id: int | None) -> str:
    return "collection.snapshot" if shard_id is None else f"shard-{shard_id}.snapshot"


def backup_prefix(collection: str, backup_id: str) -> str:
    return f"{collection}/{backup_id}/"


def snapshot_key(collection: str, backup_id: str, shard_id: int | None) -> str:
    return backup_prefix(collection, backup_id) + snapshot_file_name(shard_id)


def manifest_key(collection: str, backup_id: str) -> str:
    return backup_prefix(collection, backup_id) + MANIFEST_NAME


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    job_id: str
    type: str  # backup | shard_backup
    collection: str
    shard_id: int | None
    qdrant_snapshot_name: str
    key: str
    size: int
    sha256: str
    created_at: str
    qdrant_version: str | None
    points_count: int | None
    qbm_version: str
    format: int = 1
    #: The schedule whose run made this backup (None: made by hand, or by a QBM before schedules were recorded).
    #: A schedule's retention only ever deletes backups carrying its own id.
    schedule_id: str | None = None
    #: ``snapshot``: one Qdrant snapshot file at ``key``. ``set``: a distributed collection, one streamed
    #: snapshot per shard (``shards``), ``key`` the backup's folder, ``size`` their sum and ``sha256`` the
    #: :func:`set_digest` of the shards' checksums.
    kind: str = "snapshot"
    #: A set's shards: ``shard_id``, ``key``, ``size``, ``sha256``, ``points_count`` (Qdrant's per-shard figure;
    #: exact when ``topology.shard_counts_exact``), ``peer_id`` and ``peer_url`` it was streamed from,
    #: ``shard_key`` (custom sharding; also in ``topology.shard_keys`` with each key's exact count).
    shards: list[dict[str, Any]] | None = None
    #: What a set's restore needs and a snapshot lacks: the collection's config as ``GET /collections/{c}``
    #: gave it, its payload indexes (``payload_schema``), the aliases pointing at it, the peers and layout.
    collection_config: dict[str, Any] | None = None
    payload_schema: dict[str, Any] | None = None
    aliases: list[str] | None = None
    topology: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Manifest:
        try:
            raw = json.loads(data)
            fields = {name: raw[name] for name in cls.__dataclass_fields__ if name not in _OPTIONAL}
            schedule_id = raw.get("schedule_id")
            if schedule_id is not None and not isinstance(schedule_id, str):
                raise TypeError("schedule_id must be a string or null")
            fields.update({name: raw[name] for name in _OPTIONAL if raw.get(name) is not None})
            manifest = cls(**fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"manifest at {where} is not valid: {exc}") from exc
        if not re.fullmatch(r"[0-9a-f]{64}", manifest.sha256) or manifest.size < 0:
            raise ManifestError(f"manifest at {where} has an invalid size or sha256")
        return manifest


def set_digest(shards: list[dict[str, Any]]) -> str:
    """One sha256 for a backup set: over ``<shard_id> <sha256>`` lines in shard order."""
    lines = "".join(f"{s['shard_id']} {s['sha256']}\n" for s in sorted(shards, key=lambda s: s["shard_id"]))
    return hashlib.sha256(lines.encode()).hexdigest()


def write_manifest(storage: Storage, manifest: Manifest) -> None:
    storage.write_bytes(manifest_key(manifest.collection, manifest.backup_id), manifest.to_json())


def read_manifest(storage: Storage, collection: str, backup_id: str) -> Manifest:
    key = manifest_key(collection, backup_id)
    try:
        data = storage.read_bytes(key)
    except ObjectNotFound:
        raise ManifestError(
            f"backup {backup_id!r} of collection {collection!r} not found in storage (no {key})"
        ) from None
    manifest = Manifest.from_json(data, where=key)
    if manifest.backup_id != backup_id or manifest.collection != collection:
        raise ManifestError(f"manifest at {key} describes {manifest.collection}/{manifest.backup_id}")
    return manifest
