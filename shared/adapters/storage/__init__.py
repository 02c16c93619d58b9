"""Storage backends for backups, and the two functions the rest of QBM uses to get one.

``from_config`` turns a saved storage config (the StorageConfigStore dict, with its secret) into a backend;
``check_local_path`` is the guard that keeps user-entered local paths inside the directories the operator
allowed -- the API calls it when a config is created or edited, and ``from_config`` calls it again on every
use, so a symlink changed after validation cannot redirect backups elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import (
    BucketNotFound,
    Cancelled,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    PathNotAllowed,
    PermissionDenied,
    Storage,
    StorageError,
    StorageUnavailable,
    WriteResult,
    WrongRegion,
    validate_key,
    validate_prefix,
)
from .local import LocalStorage
from .s3 import S3Storage

__all__ = [
    "BucketNotFound",
    "Cancelled",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "PathNotAllowed",
    "PermissionDenied",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "WriteResult",
    "WrongRegion",
    "check_local_path",
    "from_config",
    "validate_key",
    "validate_prefix",
]


def check_local_path(path: str | os.PathLike[str], allowed_roots: Sequence[str | os.PathLike[str]]) -> Path:
    """Return the resolved ``path`` if it lies under one of ``allowed_roots``, else raise PathNotAllowed.

    Symlinks are followed (in the path and in the roots) and ``..`` is resolved, also for paths that do not
    exist yet (the nearest existing parent is resolved and the rest appended), so neither a symlink inside a
    root nor ``root/../elsewhere`` gets out. Relative paths are refused: they would depend on the working
    directory of whichever process resolves them.
    """
    roots = [Path(os.path.realpath(os.fspath(root))) for root in allowed_roots]
    shown = ", ".join(str(root) for root in roots) or "none configured"
    raw = os.fspath(path) if path is not None else ""
    if not isinstance(raw, str) or not raw:
        raise PathNotAllowed(f"a local storage path is required (allowed roots: {shown})")
    if "\x00" in raw:
        raise PathNotAllowed("a local storage path must not contain NUL characters")
    if not os.path.isabs(raw):
        raise PathNotAllowed(f"local storage path {raw!r} must be absolute (allowed roots: {shown})")
    resolved = Path(os.path.realpath(raw))
    for root in roots:
        if resolved == root or root in resolved.parents:
            return resolved
    if not roots:
        raise PathNotAllowed(f"local storage path {raw!r} is not allowed: no local storage roots are "
                             "configured")
    via = f" (it resolves to {resolved})" if str(resolved) != os.path.normpath(raw) else ""
    raise PathNotAllowed(f"local storage path {raw!r} is not under an allowed root{via}; "
                         f"allowed roots: {shown}")


def from_config(cfg: Mapping[str, Any], *, allowed_roots: Sequence[str | os.PathLike[str]]) -> Storage:
    """Build the backend a storage config describes (``cfg`` as returned by the store with ``with_secret``).

    Raises StorageError (PathNotAllowed for a local path outside the roots) for a config that cannot work;
    connectivity is not checked here -- that is what ``Storage.test()`` is for.
    """
    kind = cfg.get("type")
    if kind == "local":
        root = check_local_path(cfg.get("path") or "", allowed_roots)
        return LocalStorage(root)
    if kind == "s3":
        missing = [field for field in ("s3_endpoint", "s3_bucket") if not cfg.get(field)]
        if missing:
            raise StorageError(f"S3 storage config is missing {', '.join(missing)}")
        return S3Storage(
            endpoint=cfg["s3_endpoint"],
            bucket=cfg["s3_bucket"],
            region=cfg.get("s3_region") or None,
            access_key=cfg.get("s3_access_key") or "",
            secret_key=cfg.get("s3_secret_key") or "",
        )
    raise StorageError(f"unknown storage type {kind!r} (expected 'local' or 's3')")
