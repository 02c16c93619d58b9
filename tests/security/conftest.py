"""Fixtures for the security tests: the API on real Redis and the Qdrant double, a storage root in tmp_path,
and canary files outside it whose state the tests compare before and after an attack.

Asserting on the file system (not just on status codes) is the point: a 4xx that still wrote or deleted a
file outside the root would pass a status-code test and lose someone's data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from shared.runtime.config import Config
from tests.api.helpers import CheckedClient, SpecChecker
from tests.recorder import EnqueueRecorder

CANARY_TEXT = b"canary: must never be read, changed or deleted through QBM\n"


def _tree(top: Path, skip: tuple[Path, ...]) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``top`` (not following symlinks, not descending into ``skip``):
    relative path -> (kind or sha256, size, mtime_ns)."""
    found: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in [*dirnames, *filenames]:
            path = here / name
            st = path.lstat()
            if path.is_symlink():
                kind = "link->" + os.readlink(path)
            elif path.is_dir():
                kind = "dir"
            else:
                kind = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(top))] = (kind, st.st_size if kind != "dir" else 0, st.st_mtime_ns)
    return found


class FsGuard:
    """Canary files around a storage root and a picture of everything outside the root.

    ``assert_untouched()`` fails if any canary was changed or removed, or if anything outside the places
    QBM may write (the storage root, Qdrant's own data directory) appeared, changed or disappeared.
    """

    def __init__(self, top: Path, root: Path, allowed: tuple[Path, ...]) -> None:
        self.top = top
        self.root = root
        self.allowed = (root, *allowed)
        self.outside = top / "outside"
        self.outside.mkdir()
        self.canaries = [
            self.outside / "canary.txt",
            self.outside / "canary.snapshot",
            top / "canary.snapshot",  # root/../canary.snapshot
            top / "manifest.json",
        ]
        for path in self.canaries:
            path.write_bytes(CANARY_TEXT)
        self._before: dict[str, tuple[str, int, int]] | None = None

    def add_canary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CANARY_TEXT)
        self.canaries.append(path)
        return path

    def snapshot(self) -> None:
        """Take the "before" picture (call after set-up, right before the attack)."""
        self._before = _tree(self.top, self.allowed)

    def assert_untouched(self) -> None:
        for path in self.canaries:
            assert path.is_file() and not path.is_symlink(), f"canary {path} was removed or replaced"
            assert path.read_bytes() == CANARY_TEXT, f"canary {path} was changed"
        assert self._before is not None, "call snapshot() before the attack"
        after = _tree(self.top, self.allowed)
        appeared = sorted(set(after) - set(self._before))
        vanished = sorted(set(self._before) - set(after))
        changed = sorted(p for p in set(after) & set(self._before)
                         if after[p] != self._before[p] and after[p][0] != "dir")
        assert not appeared, f"new entries outside the storage root: {appeared}"
        assert not vanished, f"entries outside the storage root disappeared: {vanished}"
        assert not changed, f"files outside the storage root changed: {changed}"


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def fs_guard(tmp_path: Path, storage_root: Path, qdrant: Any) -> FsGuard:
    """Canaries next to the root, outside it, and next to Qdrant's per-collection snapshot directories
    (``{snapshots}/alpha/../canary.snapshot``), where a snapshot-name traversal would land."""
    guard = FsGuard(tmp_path, storage_root, (tmp_path / "qdrant",))
    guard.add_canary(qdrant.snapshots_path / "canary.snapshot")
    guard.add_canary(qdrant.snapshots_path.parent / "canary.snapshot")
    return guard


@pytest.fixture
def enqueued() -> EnqueueRecorder:
    return EnqueueRecorder()


@pytest.fixture
def make_config(redis_url: str, key_prefix: str, storage_root: Path, secret_key: str,
                qdrant: Any) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_url_explicit": True,
            "qdrant_url": qdrant.url,
            "key_prefix": key_prefix,
            "storage_roots": (storage_root,),
            "data_dir": storage_root,
            "secret_keys": (secret_key,),
        }
        values.update(overrides)
        return Config(**values)

    return make


@pytest.fixture
def make_client(make_config: Callable[..., Config], enqueued: list[str]) -> Callable[..., CheckedClient]:
    """A spec-checked client (every response must match the served OpenAPI document) for a Config."""

    def make(**overrides: Any) -> CheckedClient:
        app = create_app(make_config(**overrides), enqueue=enqueued)
        app.testing = True
        spec = app.test_client().get("/openapi.json").get_json()
        return CheckedClient(app, SpecChecker(spec))

    return make


@pytest.fixture
def client(make_client: Callable[..., CheckedClient], qdrant: Any) -> CheckedClient:
    qdrant.create_collection("alpha", points=20, size_bytes=16 * 1024)
    return make_client()
