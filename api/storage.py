"""Storage backends: where backups are written (a local directory under QBM_STORAGE_ROOTS or an S3 bucket).

Each backend is validated for its type on create and, merged with the stored one, on update, so a stored
config is always usable in principle; POST /storage/test checks that it works in practice. The S3 secret
key is write-only: accepted, stored, handed to the storage client, never answered or logged.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from flask_smorest import abort

from api.envelope import Blueprint, BoolResult
from api.schemas.storage import (
    StorageCreateSchema,
    StorageDeleteQuerySchema,
    StorageSchema,
    StorageTestResultSchema,
    StorageUpdateSchema,
)
from api.services import services
from shared.adapters.storage import S3Storage, StorageError, check_local_path, from_config
from shared.domain.catalog import manifest_refs
from shared.records.storage_configs import StorageConfigNotFound

blp = Blueprint("storage", __name__, description="Storage backends for backups")

ID_PARAM = {
    "in": "path",
    "name": "id",
    "description": "Storage configuration ID",
    "schema": {"type": "string"},
}

#: The store issues ids like ``st_1a2b3c4d5e6f``; anything else cannot exist. Checking first also keeps
#: arbitrary text out of Redis key names (``storage:default`` is the store's default pointer, not a config).
_ID_RE = re.compile(r"^st_[A-Za-z0-9]{1,60}$")

LOCAL_FIELDS = ("path",)
S3_FIELDS = ("s3_endpoint", "s3_bucket", "s3_region", "s3_access_key", "s3_secret_key")


def storage_id_or_404(value: str) -> str:
    """Raise StorageConfigNotFound (-> 404) for ids the store never issues."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise StorageConfigNotFound(str(value)[:80])
    return value


class InvalidStorage(ValueError):
    """A backend description that cannot work; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def validate_backend(data: dict[str, Any]) -> dict[str, Any]:
    """Check a complete backend description for its type and return it normalised.

    local: ``path`` is required and must resolve under one of QBM_STORAGE_ROOTS (it is stored resolved,
    so a later symlink swap cannot move it); s3: endpoint (http/https URL), bucket, region, access key
    and secret key are required. Fields that belong to the other type are refused rather than silently
    kept, because a stored but unused field would mislead whoever reads the config.
    """
    kind = data.get("type")
    own, other = (LOCAL_FIELDS, S3_FIELDS) if kind == "local" else (S3_FIELDS, LOCAL_FIELDS)
    for name in other:
        if data.get(name) is not None:
            raise InvalidStorage(name, f"not allowed for {kind} storage")
    for name in own:
        value = data.get(name)
        if value is None or not str(value).strip():
            raise InvalidStorage(name, f"required for {kind} storage")
    out = dict(data)
    if kind == "local":
        roots = services().config.storage_roots
        try:
            out["path"] = str(check_local_path(data["path"], roots))
        except StorageError as exc:
            raise InvalidStorage("path", str(exc)) from None
    else:
        endpoint = urlparse(data["s3_endpoint"])
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise InvalidStorage("s3_endpoint", "must be an http:// or https:// URL with a host")
        out["s3_endpoint"] = data["s3_endpoint"].rstrip("/")
        _check_s3_client_settings(out)
    return out


def _check_s3_client_settings(config: dict[str, Any]) -> None:
    """Build the storage client once (no network) so that whatever it refuses -- a bucket name S3 does not
    allow, an endpoint with a path or a bad port -- is a 422 now rather than a backend that is stored but
    can never be used (found by schemathesis: bucket "0" was saved, then every use answered 503)."""
    try:
        S3Storage(config["s3_endpoint"], config["s3_bucket"], config.get("s3_region"),
                  config.get("s3_access_key") or "", config.get("s3_secret_key") or "")
    except StorageError as exc:
        text = str(exc)
        if text.startswith(("invalid bucket name", "an S3 storage needs a bucket")):
            field = "s3_bucket"
        else:
            field = "s3_region" if "region" in text.lower() else "s3_endpoint"
        raise InvalidStorage(field, text) from None


def _validated(data: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_backend(data)
    except InvalidStorage as exc:
        abort(422, message=str(exc))
        raise


@blp.route("/storage")
@blp.response(200, StorageSchema(many=True))
@blp.errors(401, 503)
def list_storage() -> list[dict]:
    """All storage backends, oldest first"""
    return services().storage_configs.list()


def _refuse_taken_name(name: str | None, own_id: str | None = None) -> None:
    """Names are how people tell backends apart (in the dashboard, the client, logs): one backend per name."""
    taken = [c for c in services().storage_configs.list() if c.get("name") == name and c["id"] != own_id]
    if taken:
        abort(409, message=f"name: a storage backend named {name!r} already exists ({taken[0]['id']})")


@blp.route("/storage", methods=["POST"])
@blp.arguments(StorageCreateSchema)
@blp.response(201, StorageSchema)
@blp.errors(401, 409, 422, 503)
def create_storage(body: dict) -> dict:
    """Create a storage backend

    is_default: true makes it the default and clears the flag on every other backend in the same step.
    409 when another backend has the same name.
    """
    config = _validated(body)
    _refuse_taken_name(config.get("name"))
    return services().storage_configs.create(config)


@blp.route("/storage/test", methods=["POST"])
@blp.arguments(StorageCreateSchema)
@blp.response(200, StorageTestResultSchema,
              description="success false (with the reason in message) when the backend fails the test")
@blp.errors(401, 422)
def try_storage(body: dict) -> dict:
    """Test a storage backend without saving it

    local: the directory exists or can be created, and a probe file can be written and removed;
    s3: the bucket exists and a probe object can be put and removed. Invalid input is a 422; a backend
    that fails the test is a 200 with success false.
    """
    config = _validated(body)
    try:
        storage = from_config(config, allowed_roots=services().config.storage_roots)
        success, message = storage.test()
    except StorageError as exc:
        success, message = False, str(exc)
    return {"success": bool(success), "message": message}


@blp.route("/storage/<id>", parameters=[ID_PARAM])
@blp.response(200, StorageSchema)
@blp.errors(401, 404, 503)
def get_storage(id: str) -> dict:  # noqa: A002 - the contract's name
    """One storage backend"""
    return services().storage_configs.get(storage_id_or_404(id))


@blp.route("/storage/<id>", methods=["PUT"], parameters=[ID_PARAM])
@blp.arguments(StorageUpdateSchema)
@blp.response(200, StorageSchema)
@blp.errors(401, 404, 409, 422, 503)
def update_storage(body: dict, id: str) -> dict:  # noqa: A002
    """Update a storage backend (partial)

    Only the fields given change; type cannot change. The merged result is validated like a new backend
    (a new path must be under QBM_STORAGE_ROOTS). Omit s3_secret_key to keep the stored one.
    """
    store = services().storage_configs
    current = store.get(storage_id_or_404(id), with_secret=True)
    if "type" in body and body["type"] != current["type"]:
        abort(422, message=f"type: cannot change from {current['type']} to {body['type']}; "
                           "create a new storage backend instead")
    changes = {k: v for k, v in body.items() if k != "type"}
    merged = _validated({**current, **changes})
    if "name" in changes:
        _refuse_taken_name(changes["name"], own_id=id)
    for name in (*LOCAL_FIELDS, *S3_FIELDS):
        if name in changes:
            changes[name] = merged.get(name)
    return store.update(id, changes)


@blp.route("/storage/<id>", methods=["DELETE"], parameters=[ID_PARAM])
@blp.arguments(StorageDeleteQuerySchema, location="query")
@blp.response(200, BoolResult)
@blp.errors(401, 404, 409, 503)
def delete_storage(args: dict, id: str) -> bool:  # noqa: A002
    """Delete a storage backend

    Refused with 409 while a pending or running job or a schedule uses it (its backups would all fail), and
    while it holds backups unless ``force=true`` (the answer says how many). Deleting a backend never deletes
    the backups in it: they stay in storage, and registering the backend again lists and restores them.
    """
    svc = services()
    svc.storage_configs.get(storage_id_or_404(id))  # 404 before 409
    active = svc.jobs.count_active_using_storage(id)
    if active:
        abort(409, message=f"storage backend {id} is used by {active} pending or running job(s); "
                           "wait for them or cancel them first")
    schedules = [s for s in svc.schedules.list() if s.get("storage_id") == id]
    if schedules:
        named = ", ".join(f"{s['name']!r} ({s['id']})" for s in schedules[:5])
        more = f" and {len(schedules) - 5} more" if len(schedules) > 5 else ""
        abort(409, message=f"storage backend {id} is used by schedule(s) {named}{more}; point them at another "
                           "storage backend or delete them first")
    if not args["force"]:
        held = _backups_held(id)
        if held:
            abort(409, message=f"storage backend {id} holds {held} backup(s); deleting the backend keeps them in "
                               "storage but QBM will no longer list or restore them: repeat with ?force=true "
                               "to delete it anyway")
    svc.storage_configs.delete(id)
    return True


def _backups_held(storage_id: str) -> int:
    """How many backups (manifests) the backend holds; 503 when it cannot be read (then nothing is deleted)."""
    try:
        _, storage = services().open_storage(storage_id)
        return sum(1 for _ in manifest_refs(storage))
    except StorageError as exc:
        abort(503, message=f"storage backend {storage_id} could not be read to count its backups: {exc}; "
                           "repeat with ?force=true to delete it without counting")
        raise
