"""Name rules shared by the API, the workers and the scheduler.

A name that reaches Qdrant, Redis keys or storage keys must be checked the same way wherever it enters the
system, otherwise a name the scheduler accepts could be one the API refuses (or worse, one that escapes a
storage root). Each ``check_*`` function returns the value unchanged or raises :class:`InvalidName`, whose
message is written for the person who sent the value.
"""

from __future__ import annotations

import re

#: Qdrant accepts more, but these characters are safe in URLs, file names and Redis keys alike.
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,255}$"
#: A QBM backup id (``20261124T021500Z-1a2b3c4d``) or a Qdrant snapshot file name, as restore jobs name them.
BACKUP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,200}$"
SNAPSHOT_SUFFIX = ".snapshot"
#: Qdrant's shard ids are u32.
MAX_SHARD_ID = 2**32 - 1
MAX_SNAPSHOT_NAME_LENGTH = 255

_COLLECTION_RE = re.compile(COLLECTION_NAME_PATTERN)
_BACKUP_ID_RE = re.compile(BACKUP_ID_PATTERN)


class InvalidName(ValueError):
    """A name breaks its rule; the message says which rule."""


def check_collection_name(name: object) -> str:
    """Collection names: 1-255 characters from ``A-Z a-z 0-9 _ . -``, and not ``.`` or ``..``.

    ``.`` and ``..`` match the character class but would be path components, so they are refused too.
    """
    if not isinstance(name, str) or not _COLLECTION_RE.fullmatch(name):
        raise InvalidName("must be 1-255 characters from A-Z, a-z, 0-9, '_', '.', '-'")
    if name in (".", ".."):
        raise InvalidName("must not be '.' or '..'")
    return name


def is_collection_name(name: object) -> bool:
    try:
        check_collection_name(name)
    except InvalidName:
        return False
    return True


def check_snapshot_name(name: object) -> str:
    """Qdrant snapshot file names: a plain file name ending in ``.snapshot``.

    Snapshot names are put into Qdrant URLs and local file paths, so anything that could change the path
    (``/``, ``\\``, ``..``, NUL) is refused rather than escaped.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName("must be a non-empty file name")
    if len(name) > MAX_SNAPSHOT_NAME_LENGTH:
        raise InvalidName(f"must be at most {MAX_SNAPSHOT_NAME_LENGTH} characters")
    if "\x00" in name or any(ord(c) < 0x20 for c in name):
        raise InvalidName("must not contain NUL or control characters")
    if "/" in name or "\\" in name:
        raise InvalidName("must be a plain file name (no '/' or '\\')")
    if ".." in name:
        raise InvalidName("must not contain '..'")
    if not name.endswith(SNAPSHOT_SUFFIX) or name == SNAPSHOT_SUFFIX:
        raise InvalidName(f"must end in '{SNAPSHOT_SUFFIX}'")
    return name


def check_backup_ref(name: object) -> str:
    """What a restore job may name: a QBM backup id or a ``.snapshot`` file name.

    Both are plain names of up to 200 characters from ``A-Z a-z 0-9 _ . -`` without ``..``; which one it
    is gets resolved by the restore worker against the backup catalogue.
    """
    if not isinstance(name, str) or not _BACKUP_ID_RE.fullmatch(name):
        raise InvalidName("must be 1-200 characters from A-Z, a-z, 0-9, '_', '.', '-'")
    if ".." in name:
        raise InvalidName("must not contain '..'")
    if name == ".":  # a path component meaning "this directory", never a backup
        raise InvalidName("must not be '.'")
    return name


def check_shard_id(value: object) -> int:
    """Shard ids are integers from 0 to 2**32-1 (Qdrant's u32); a string of digits (from a URL) is
    accepted and converted."""
    message = f"must be an integer from 0 to {MAX_SHARD_ID}"
    if isinstance(value, bool):
        raise InvalidName(message)
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 10:
            raise InvalidName(message)
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_SHARD_ID:
        raise InvalidName(message)
    return value


__all__ = [
    "BACKUP_ID_PATTERN",
    "COLLECTION_NAME_PATTERN",
    "MAX_SHARD_ID",
    "SNAPSHOT_SUFFIX",
    "InvalidName",
    "check_backup_ref",
    "check_collection_name",
    "check_shard_id",
    "check_snapshot_name",
    "is_collection_name",
]
