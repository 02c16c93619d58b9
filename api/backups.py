"""The backup catalog: the backups a storage backend holds, read from their manifests (not from Redis).

Because the catalog is the storage's own content, it still lists every backup after Redis lost its data.
A backup is addressed as ``/backups/{storageId}/{backupId}``; a backup id alone does not say which collection
directory it is in, so without ``?collection=`` the backend's listing is scanned for
``*/{backupId}/manifest.json`` (one listing, O(objects)); with it, the manifest is read directly.
"""

from __future__ import annotations

import re

from flask_smorest import abort

from api.envelope import Blueprint
from api.schemas.backups import (
    BackupListQuerySchema,
    BackupLocateQuerySchema,
    BackupPageSchema,
    BackupSchema,
    PruneResultSchema,
    PruneSchema,
)
from api.services import services
from shared.adapters.storage import Storage, StorageError
from shared.domain.catalog import (
    BackupNotFound,
    BackupPinned,
    Listed,
    delete_backup,
    entry,
    find_backup,
    list_backups,
    pin,
    unpin,
)
from shared.domain.retention import ANY_MAKER, Policy, protected_names, prune
from shared.intake.names import InvalidName, check_backup_ref
from shared.intake.submit import InvalidJobRequest, storage_id_format_ok
from shared.records.storage_configs import StorageConfigNotFound
from shared.runtime.timeutil import utcnow

blp = Blueprint("backups", __name__, description="Backups found in storage, and pruning them")

STORAGE_PARAM = {"in": "path", "name": "storageId", "description": "Storage backend ID", "schema": {"type": "string"}}
BACKUP_PARAM = {"in": "path", "name": "backupId", "description": "Backup ID", "schema": {"type": "string"}}
_NOT_A_COLLECTION = re.compile(r"^\.{1,2}$")


def _open(storage_id: str | None, *, field: str | None) -> tuple[str, Storage]:
    """The backend ``storage_id`` names (the default one when None). An unknown id is a 422 naming ``field``
    when it came from a query or body, a 404 when it is part of the path (``field`` None)."""
    svc = services()
    try:
        if storage_id is None:
            storage_id = svc.submitter.default_storage()
        if not storage_id_format_ok(storage_id):
            raise StorageConfigNotFound(storage_id[:80])
        return storage_id, svc.open_storage(storage_id)[1]
    except InvalidJobRequest as exc:
        abort(422, message=f"{field or 'storage_id'}: {exc.message}")
        raise
    except StorageConfigNotFound:
        if field is None:
            abort(404, message=f"storage backend {storage_id[:80]} not found")
        abort(422, message=f"{field}: storage backend {storage_id[:80]} does not exist")
        raise
    except StorageError as exc:  # the stored config itself is unusable (path outside the roots, bad bucket name)
        message = f"storage backend {storage_id} cannot be used: {exc}"
        if field is None:
            abort(409, message=message)
        abort(422, message=f"{field}: {message}")
        raise


def _storage_failed(storage_id: str, exc: StorageError) -> None:
    abort(503, message=f"storage backend {storage_id} could not be read: {exc}")


def _check_collection(collection: str | None) -> None:
    if collection is not None and _NOT_A_COLLECTION.fullmatch(collection):
        abort(422, message="collection: must not be '.' or '..'")


def _locate(storage_id: str, backup_id: str, collection: str | None) -> tuple[str, Storage, Listed]:
    _check_collection(collection)
    storage_id, storage = _open(storage_id, field=None)
    try:
        check_backup_ref(backup_id)
        return storage_id, storage, find_backup(storage, backup_id, collection=collection)
    except (InvalidName, BackupNotFound):
        abort(404, message=f"backup {backup_id[:80]} not found in storage backend {storage_id}")
        raise
    except StorageError as exc:
        _storage_failed(storage_id, exc)
        raise


@blp.route("/backups")
@blp.arguments(BackupListQuerySchema, location="query")
@blp.response(200, BackupPageSchema)
@blp.errors(401, 422, 503)
def list_catalog(args: dict) -> dict:
    """Backups in a storage backend, newest first, paginated

    Read from the manifests in storage, so the list survives a loss of Redis. Costs one listing of the
    backend (of the collection's directory with ?collection=) and one manifest read per listed backup.
    """
    collection = args.get("collection")
    _check_collection(collection)
    storage_id, storage = _open(args.get("storage_id"), field="storage_id")
    try:
        manifests, total = list_backups(storage, collection=collection, page=args["page"], limit=args["limit"])
    except StorageError as exc:
        _storage_failed(storage_id, exc)
        raise
    return {"items": [entry(item, storage_id) for item in manifests], "total": total, "page": args["page"],
            "limit": args["limit"]}


@blp.route("/backups/<storageId>/<backupId>", parameters=[STORAGE_PARAM, BACKUP_PARAM])
@blp.arguments(BackupLocateQuerySchema, location="query")
@blp.response(200, BackupSchema)
@blp.errors(401, 404, 409, 422, 503)
def get_backup(args: dict, storageId: str, backupId: str) -> dict:  # noqa: N803 - the path's names
    """One backup (its manifest and whether it is pinned)"""
    storage_id, _, found = _locate(storageId, backupId, args.get("collection"))
    return entry(found, storage_id)


@blp.route("/backups/<storageId>/<backupId>", methods=["DELETE"], parameters=[STORAGE_PARAM, BACKUP_PARAM])
@blp.arguments(BackupLocateQuerySchema, location="query")
@blp.response(200, BackupSchema, description="The deleted backup")
@blp.errors(401, 404, 409, 422, 503)
def delete_one(args: dict, storageId: str, backupId: str) -> dict:  # noqa: N803
    """Delete a backup

    The manifest goes first (from then on the backup is not listed or restorable), then the data. 409 while
    a pending or running restore job names the backup, and while the backup is pinned.
    """
    svc = services()
    storage_id, storage, found = _locate(storageId, backupId, args.get("collection"))
    manifest = found.manifest
    if {manifest.backup_id, manifest.qdrant_snapshot_name} & protected_names(svc.jobs):
        abort(409, message=f"backup {manifest.backup_id} is named by a pending or running restore job; "
                           "wait for it or cancel it first")
    try:
        delete_backup(storage, manifest)
    except BackupPinned as exc:
        abort(409, message=str(exc))
    except StorageError as exc:
        _storage_failed(storage_id, exc)
    return entry(Listed(manifest, pinned=False), storage_id)


def _set_pin(args: dict, storage_id: str, backup_id: str, pinned: bool) -> dict:
    storage_id, storage, found = _locate(storage_id, backup_id, args.get("collection"))
    try:
        (pin if pinned else unpin)(storage, found.manifest)
    except StorageError as exc:
        _storage_failed(storage_id, exc)
    return entry(Listed(found.manifest, pinned=pinned), storage_id)


@blp.route("/backups/<storageId>/<backupId>/pin", methods=["PUT"], parameters=[STORAGE_PARAM, BACKUP_PARAM])
@blp.arguments(BackupLocateQuerySchema, location="query")
@blp.response(200, BackupSchema, description="The pinned backup")
@blp.errors(401, 404, 409, 422, 503)
def pin_backup(args: dict, storageId: str, backupId: str) -> dict:  # noqa: N803
    """Pin a backup

    A pinned backup is never deleted by retention (a schedule's or POST /backups/prune), whatever the rules
    say, and DELETE refuses it, until it is unpinned. The pin is a small marker object (pinned.json) next to
    the manifest, so it lives with the backup in storage. Pinning a pinned backup changes nothing.
    """
    return _set_pin(args, storageId, backupId, True)


@blp.route("/backups/<storageId>/<backupId>/pin", methods=["DELETE"], parameters=[STORAGE_PARAM, BACKUP_PARAM])
@blp.arguments(BackupLocateQuerySchema, location="query")
@blp.response(200, BackupSchema, description="The unpinned backup")
@blp.errors(401, 404, 409, 422, 503)
def unpin_backup(args: dict, storageId: str, backupId: str) -> dict:  # noqa: N803
    """Unpin a backup

    From now on retention rules and DELETE apply to it again. Unpinning a backup that is not pinned changes
    nothing.
    """
    return _set_pin(args, storageId, backupId, False)


@blp.route("/backups/prune", methods=["POST"])
@blp.arguments(PruneSchema)
@blp.response(200, PruneResultSchema)
@blp.errors(401, 422, 503)
def prune_backups(body: dict) -> dict:
    """Apply a retention policy to a collection's backups now

    The same rules as a schedule's retention, per series (collection backups, and each shard on its own):
    keep the newest keep_last, delete those older than max_age_days; never the newest backup, never one a
    pending or running restore names, never a pinned one (pinned backups do not count towards keep_last).
    Every backup of the collection is considered, made by hand or by any schedule, unless schedule_id limits
    it to that schedule's backups. With dry_run nothing is deleted and the answer says what would be.
    """
    _check_collection(body["collection"])
    storage_id, storage = _open(body.get("storage_id"), field="storage_id")
    policy = Policy(keep_last=body.get("keep_last"), max_age_days=body.get("max_age_days"))
    try:
        outcome = prune(storage, body["collection"], policy, now=utcnow(), protected=protected_names(services().jobs),
                        schedule_id=body["schedule_id"] or ANY_MAKER, dry_run=body["dry_run"])
    except StorageError as exc:
        _storage_failed(storage_id, exc)
        raise
    deleted = [entry(Listed(m, pinned=False), storage_id) for m in outcome.deleted]
    return {"dry_run": body["dry_run"], "deleted": deleted,
            "kept": [m.backup_id for m in outcome.kept], "pinned": [m.backup_id for m in outcome.pinned]}
