"""Path traversal: names and paths from callers never reach a file outside the storage root (or outside a
collection's snapshot directory on Qdrant).

Every attack is followed by a look at the file system: canaries next to and outside the root are unchanged,
and nothing appeared, changed or vanished outside the places QBM may write. A 4xx alone is not enough.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.api.helpers import API, error_of, result_of
from tests.security.conftest import CANARY_TEXT, FsGuard

#: Snapshot names as they appear in a URL path (percent-encoding is decoded once by the WSGI server,
#: exactly as gunicorn does; the double-encoded forms arrive at the view still encoded once).
SNAPSHOT_NAMES_IN_URL = [
    "..",
    "%2e%2e",
    "%2E%2E",
    "..%2fcanary.snapshot",
    "..%2Fcanary.snapshot",
    "%2e%2e%2fcanary.snapshot",
    "%2e%2e/canary.snapshot",
    "%252e%252e%252fcanary.snapshot",
    "..%252fcanary.snapshot",
    "%252e%252e",
    "..%5ccanary.snapshot",
    "..\\canary.snapshot",
    "canary.snapshot%00",
    "x%00.snapshot",
    "%2fetc%2fpasswd",
    "....%2f%2fcanary.snapshot",
    ".snapshot",
]

COLLECTION_NAMES_IN_URL = ["..", "%2e%2e", ".", "..%2f..%2fqdrant", "%252e%252e", "alpha%00", "alpha%2f..%2f.."]

#: Backup references a restore job might carry (JSON strings: no URL decoding ever happens to them).
BACKUP_REFS = [
    "..",
    ".",
    "...",
    "../outside",
    "../../outside/canary.txt",
    "a/../../b",
    "x/..",
    "/etc/passwd",
    "..\\outside",
    "%2e%2e",
    "%2e%2e%2foutside",
    "%252e%252e%252f",
    "..%2f",
    "x\x00y",
    "20260101T000000Z-deadbeef/../../outside",
    "",
]


def _assert_no_traversal_reached_qdrant(qdrant: Any) -> None:
    """Qdrant (as it decodes paths: once) never saw a path with a '..' segment or a NUL."""
    for method, path in qdrant.requests_seen:
        segments = path.split("/")
        assert ".." not in segments and "\x00" not in path, f"Qdrant was asked {method} {path!r}"


# --- snapshot and collection names in URLs -------------------------------------------------------------


def _dangerous(name: str) -> bool:
    return any(part in name for part in ("/", "\\", "\x00")) or name in ("..", ".")


@pytest.mark.parametrize("name", SNAPSHOT_NAMES_IN_URL)
def test_snapshot_name_traversal_is_refused_and_touches_nothing(client, qdrant, fs_guard: FsGuard, name):
    """A name that is a path (after the one decoding a WSGI server does) never reaches Qdrant; a name that
    only looks like one once more decoded is passed on literally (so Qdrant's single decoding yields the
    same harmless file name), and Qdrant answers 404."""
    snapshot = result_of(client.post(f"{API}/collections/alpha/snapshots"))  # something real to hide behind
    fs_guard.snapshot()
    before = {p.name for p in qdrant.snapshot_files("alpha")}
    as_seen_by_view = unquote(name)

    plain_snapshot_name = (as_seen_by_view.endswith(".snapshot") and as_seen_by_view != ".snapshot"
                           and ".." not in as_seen_by_view)
    for method, path in (("GET", f"{API}/collections/alpha/snapshots/{name}/download"),
                         ("DELETE", f"{API}/collections/alpha/snapshots/{name}")):
        seen = len(qdrant.requests_seen)
        resp = client.open(path, method)
        assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.get_data()[:200])
        assert CANARY_TEXT not in resp.get_data()
        asked = qdrant.requests_seen[seen:]
        if _dangerous(as_seen_by_view):
            assert asked == [], f"Qdrant was asked about {as_seen_by_view!r}: {asked}"
        elif plain_snapshot_name:
            # Qdrant's download and delete are both on the snapshot's own path.
            assert [q for _, q in asked] == [f"/collections/alpha/snapshots/{as_seen_by_view}"], asked
    fs_guard.assert_untouched()
    assert {p.name for p in qdrant.snapshot_files("alpha")} == before
    assert snapshot["name"] in before
    _assert_no_traversal_reached_qdrant(qdrant)


@pytest.mark.parametrize("name", COLLECTION_NAMES_IN_URL)
def test_collection_name_traversal_is_refused(client, qdrant, fs_guard: FsGuard, name):
    fs_guard.snapshot()
    for method, path in (("GET", f"{API}/collections/{name}/snapshots"),
                         ("POST", f"{API}/collections/{name}/snapshots"),
                         ("GET", f"{API}/collections/{name}/snapshots/x.snapshot/download"),
                         ("DELETE", f"{API}/collections/{name}/snapshots/x.snapshot"),
                         ("POST", f"{API}/collections/{name}/shards/0/snapshots")):
        seen = len(qdrant.requests_seen)
        resp = client.open(path, method)
        assert 400 <= resp.status_code < 500, (method, path, resp.status_code)
        if _dangerous(unquote(name)) or "%" in unquote(name):
            assert qdrant.requests_seen[seen:] == [], (method, path, qdrant.requests_seen[seen:])
    fs_guard.assert_untouched()
    _assert_no_traversal_reached_qdrant(qdrant)


# --- local storage paths -------------------------------------------------------------------------------


def _bad_paths(root: Path, outside: Path) -> list[str]:
    escape = root / "escape"
    escape.symlink_to(outside, target_is_directory=True)
    (root / "dangling").symlink_to(outside / "not-yet")
    return [
        "/",
        "/etc",
        str(outside),
        str(root.parent),
        f"{root}/../outside",
        f"{root}/sub/../../outside",
        str(escape),
        str(escape / "deeper"),
        str(root / "dangling"),
        "outside",
        "../outside",
        "root",
        "~/backups",
        f"file://{root}",
        f"{root}\x00/../../outside",
        f"{root}/x\x00y",
        "",
        "   ",
    ]


def test_local_storage_outside_the_roots_is_refused_everywhere(client, storage_root, fs_guard: FsGuard):
    bad = _bad_paths(storage_root, fs_guard.outside)
    existing = result_of(client.post(f"{API}/storage", json={"name": "ok", "type": "local",
                                                            "path": str(storage_root / "ok")}))
    fs_guard.snapshot()
    for path in bad:
        body = {"name": "evil", "type": "local", "path": path}
        for method, url, payload in (("POST", f"{API}/storage", body),
                                     ("POST", f"{API}/storage/test", body),
                                     ("PUT", f"{API}/storage/{existing['id']}", {"path": path})):
            resp = client.open(url, method, json=payload)
            assert resp.status_code == 422, (method, url, path, resp.get_json())
            assert error_of(resp).startswith("path:"), error_of(resp)
    listed = result_of(client.get(f"{API}/storage"))
    assert [s["path"] for s in listed] == [str(storage_root / "ok")]
    fs_guard.assert_untouched()


def test_percent_encoding_in_a_local_path_is_a_literal_name_inside_the_root(client, storage_root,
                                                                            fs_guard: FsGuard):
    """Paths arrive in JSON and are never URL-decoded: '%2e%2e' is a directory called '%2e%2e'."""
    fs_guard.snapshot()
    path = f"{storage_root}/%2e%2e/outside"
    created = result_of(client.post(f"{API}/storage", json={"name": "odd", "type": "local", "path": path}))
    assert created["path"] == path
    tested = result_of(client.post(f"{API}/storage/test", json={"name": "odd", "type": "local", "path": path}))
    assert tested["success"] is True, tested
    assert tested["message"].endswith(f"in {storage_root}/%2e%2e/outside")  # the literal name, inside the root
    assert not (storage_root / "%2e%2e").exists()  # and the test left no folder behind
    fs_guard.assert_untouched()


def test_a_symlink_swapped_in_after_registration_is_not_followed(client, storage_root, fs_guard: FsGuard):
    """The path is checked again on every use, so replacing the directory by a symlink out of the root
    after the backend was saved does not redirect anything."""
    target = storage_root / "data"
    target.mkdir()
    created = result_of(client.post(f"{API}/storage", json={"name": "d", "type": "local", "path": str(target),
                                                            "is_default": True}))
    target.rmdir()
    target.symlink_to(fs_guard.outside, target_is_directory=True)
    fs_guard.snapshot()

    tested = client.post(f"{API}/storage/test", json={"name": "d", "type": "local", "path": str(target)})
    assert tested.status_code == 422 and error_of(tested).startswith("path:")
    listing = client.get(f"{API}/backups", query_string={"storage_id": created["id"]})
    assert listing.status_code in (422, 503), listing.get_json()
    assert "not under an allowed root" in error_of(listing)
    fs_guard.assert_untouched()


# --- restore jobs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_type", ["restore", "shard_restore"])
def test_restore_job_with_a_traversing_snapshot_name_is_refused(client, storage_root, fs_guard: FsGuard,
                                                                 enqueued, job_type):
    result_of(client.post(f"{API}/storage", json={"name": "d", "type": "local", "path": str(storage_root / "b"),
                                                  "is_default": True}))
    fs_guard.snapshot()
    extra = {"shard_id": 0} if job_type == "shard_restore" else {}
    for ref in BACKUP_REFS:
        resp = client.post(f"{API}/jobs", json={"type": job_type, "collection_name": "alpha",
                                                "snapshot_name": ref, **extra})
        assert resp.status_code == 422, (ref, resp.get_json())
        assert error_of(resp).startswith("snapshot_name:"), error_of(resp)
    for target in ("..", ".", "../outside", "a/b", "%2e%2e"):
        resp = client.post(f"{API}/jobs", json={"type": job_type, "collection_name": "alpha",
                                                "snapshot_name": "20260101T000000Z-deadbeef",
                                                "metadata": {"target_collection": target}, **extra})
        assert resp.status_code == 422, (target, resp.get_json())
        assert "target_collection" in error_of(resp)
    page = client.get(f"{API}/jobs").get_json()
    assert page["total"] == 0 and enqueued == []
    fs_guard.assert_untouched()


# --- the backup catalogue -------------------------------------------------------------------------------


def _plant_backup(directory: Path, collection: str, backup_id: str) -> Path:
    """A complete-looking backup (manifest + snapshot), so a traversal that reached it would find it."""
    snap = directory / collection / backup_id / "collection.snapshot"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(CANARY_TEXT)
    manifest = {
        "backup_id": backup_id, "job_id": "j", "type": "backup", "collection": collection, "shard_id": None,
        "qdrant_snapshot_name": "x.snapshot", "key": f"{collection}/{backup_id}/collection.snapshot",
        "size": len(CANARY_TEXT), "sha256": "0" * 64, "created_at": "2026-01-01T00:00:00Z",
        "qdrant_version": "1.19.0", "points_count": 1, "qbm_version": "0", "format": 1,
    }
    path = snap.parent / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


BACKUP_IDS_IN_URL = ["..", "%2e%2e", ".", "..%2f..%2foutside", "%252e%252e%252f20260101T000000Z-deadbeef",
                     "20260101T000000Z-deadbeef%00", "..%5c20260101T000000Z-deadbeef"]
COLLECTION_QUERIES = ["..", ".", "../outside", "..%2foutside", "%2e%2e", "../../root/..", "/abs"]


def test_backup_catalogue_cannot_be_pointed_outside_the_root(client, storage_root, fs_guard: FsGuard):
    backups = storage_root / "b"
    backups.mkdir()
    storage = result_of(client.post(f"{API}/storage", json={"name": "d", "type": "local", "path": str(backups),
                                                            "is_default": True}))
    backup_id = "20260101T000000Z-deadbeef"
    # Same names as a traversal would produce: root/b/../../outside/<id>/manifest.json and friends.
    planted = [_plant_backup(fs_guard.outside, "victim", backup_id), _plant_backup(storage_root, "outside", backup_id)]
    contents = {p: p.read_bytes() for p in planted}
    fs_guard.snapshot()

    sid = storage["id"]
    for bad_id in BACKUP_IDS_IN_URL:
        for method in ("GET", "DELETE"):
            resp = client.open(f"{API}/backups/{sid}/{bad_id}", method)
            assert 400 <= resp.status_code < 500, (method, bad_id, resp.status_code, resp.get_json())
    for collection in COLLECTION_QUERIES:
        for method in ("GET", "DELETE"):
            resp = client.open(f"{API}/backups/{sid}/{backup_id}", method, query_string={"collection": collection})
            assert 400 <= resp.status_code < 500, (method, collection, resp.status_code, resp.get_json())
        listing = client.get(f"{API}/backups", query_string={"storage_id": sid, "collection": collection})
        assert 400 <= listing.status_code < 500, (collection, listing.get_json())
    for bad_sid in ("..", "%2e%2e", "..%2f..%2f", "st_..", "storages:default"):
        resp = client.get(f"{API}/backups/{bad_sid}/{backup_id}")
        assert resp.status_code in (404, 422), (bad_sid, resp.status_code)

    # The planted backups outside the configured directory were neither found nor deleted.
    for path, data in contents.items():
        assert path.read_bytes() == data
    fs_guard.assert_untouched()
    assert os.listdir(backups) == []
