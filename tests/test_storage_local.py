"""LocalStorage and the local-path guard, against real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.adapters.storage import (
    Cancelled,
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    PathNotAllowed,
    S3Storage,
    StorageError,
    check_local_path,
    from_config,
)
from tests.storage_roundtrip import ChunkReader, generate, run_in_child

MiB = 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the root holding a 'secret' that no storage operation may read, change or list."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_bytes(b"do not touch")
    return path


@pytest.fixture
def store(root: Path) -> LocalStorage:
    return LocalStorage(root)


def all_entries(path: Path) -> list[str]:
    """Every file and directory under ``path`` (relative), to show what a failed operation left behind."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def chunks(n: int, size: int = MiB):
    for index in range(n):
        yield bytes([index % 256]) * size


# -- streaming round trip ------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_read", [None, 4 * MiB], ids=["chunks", "readable"])
def test_200_mib_round_trip_keeps_sha256_and_memory_bounded(tmp_path: Path, max_read: int | None) -> None:
    report = run_in_child({"backend": {"type": "local", "root": str(tmp_path / "store")},
                           "key": "coll/2026-11-24T02:15:00Z/full.snapshot", "mib": 200, "tail": 12345,
                           "max_read": max_read})

    assert report["written_size"] == report["expected_size"] == 200 * MiB + 12345
    assert report["written_sha256"] == report["expected_sha256"]
    assert report["read_sha256"] == report["expected_sha256"]
    assert report["read_size"] == report["stat_size"] == report["expected_size"]
    assert report["last_progress"] == report["expected_size"]
    # 200 MiB went through; the process grew by far less than that.
    assert report["peak_rss_mib"] - report["baseline_rss_mib"] < 64, report
    assert (tmp_path / "store/coll/2026-11-24T02:15:00Z/full.snapshot").stat().st_size == 200 * MiB + 12345


def test_readable_source_with_short_reads(store: LocalStorage, root: Path) -> None:
    """A readable source (a download) is read into a few reused buffers; reads of any length, hashed on a
    helper thread while the next is read, still give exactly the source's bytes and their sha256."""
    expected = hashlib.sha256()
    source = ChunkReader(generate(20, 4321, expected), max_read=700_001)
    progress: list[int] = []

    result = store.write("a/b.bin", source, on_progress=progress.append)

    data = (root / "a/b.bin").read_bytes()
    assert result.size == len(data) == progress[-1] == 20 * MiB + 4321
    assert result.sha256 == expected.hexdigest() == hashlib.sha256(data).hexdigest()


def test_write_reports_size_sha256_and_progress(store: LocalStorage, root: Path) -> None:
    progress: list[int] = []
    data = [b"abc", b"", bytearray(b"def"), memoryview(b"ghij")]

    result = store.write("a/b.bin", data, on_progress=progress.append)

    assert result.size == 10
    assert result.sha256 == hashlib.sha256(b"abcdefghij").hexdigest()
    assert progress == [3, 6, 10]  # empty chunks are skipped, not treated as end of stream
    assert (root / "a/b.bin").read_bytes() == b"abcdefghij"


def test_empty_object(store: LocalStorage) -> None:
    result = store.write("empty", iter(()))

    assert result.size == 0
    assert result.sha256 == hashlib.sha256(b"").hexdigest()
    assert store.read_bytes("empty") == b""


def test_object_is_invisible_until_the_write_completes(store: LocalStorage, root: Path) -> None:
    seen_during_write: list[tuple[bool, list[str], list[str]]] = []

    def source():
        yield b"x" * 1000
        seen_during_write.append((store.exists("c/obj"), [o.key for o in store.list()],
                                  sorted(os.listdir(root / "c"))))
        yield b"y" * 1000

    store.write("c/obj", source())

    [(existed, listed, on_disk)] = seen_during_write
    assert not existed and listed == []
    assert len(on_disk) == 1 and on_disk[0].startswith(".obj.") and on_disk[0].endswith(".part")
    assert os.listdir(root / "c") == ["obj"]  # the temp file became the object, nothing else is left


# -- failures leave nothing behind --------------------------------------------------------------------------


def test_source_failure_midway_leaves_no_file_and_no_temp_file(store: LocalStorage, root: Path) -> None:
    def failing():
        yield from chunks(5)
        raise ConnectionError("qdrant went away")

    with pytest.raises(ConnectionError, match="qdrant went away"):  # the source's error, unchanged
        store.write("coll/snap/full.snapshot", failing())

    assert all_entries(root) == []  # no file, no temp file, no directories created for it
    assert not store.exists("coll/snap/full.snapshot")


def test_cancel_leaves_nothing_and_stops_reading(store: LocalStorage, root: Path) -> None:
    pulled: list[int] = []

    def source():
        for index in range(100):
            pulled.append(index)
            yield b"z" * MiB

    progress: list[int] = []
    with pytest.raises(Cancelled):
        store.write("coll/x.snapshot", source(), on_progress=progress.append,
                    should_continue=lambda: len(progress) < 3)

    assert progress == [MiB, 2 * MiB, 3 * MiB]
    assert pulled == [0, 1, 2]  # no chunk is pulled after the stop
    assert all_entries(root) == []


class Interrupt(BaseException):
    """Like dramatiq's time-limit/shutdown interrupts, which are BaseExceptions."""


def test_interrupt_leaves_nothing(store: LocalStorage, root: Path) -> None:
    def interrupted():
        yield from chunks(2)
        raise Interrupt()

    with pytest.raises(Interrupt):
        store.write("coll/x.snapshot", interrupted())
    assert all_entries(root) == []


def test_failed_overwrite_keeps_the_previous_object(store: LocalStorage) -> None:
    store.write_bytes("manifest.json", b"version 1")

    def failing():
        yield b"version 2, half"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write("manifest.json", failing())

    assert store.read_bytes("manifest.json") == b"version 1"
    assert [o.key for o in store.list()] == ["manifest.json"]


def test_leftover_temp_files_from_a_crash_are_never_listed(store: LocalStorage, root: Path) -> None:
    (root / "c").mkdir()
    (root / "c/.full.snapshot.qbm-0123456789ab.part").write_bytes(b"half a snapshot")
    store.write_bytes("c/other", b"1")

    assert [o.key for o in store.list()] == ["c/other"]
    assert not store.exists("c/full.snapshot")
    # ... whatever order the directory lists them in: a leftover among objects hides none of them
    for name in ("a", "b", "c"):
        store.write_bytes(f"c/{name}", b"1")
    (root / "c/.b.qbm-0123456789ab.part").write_bytes(b"half")
    for name in ("x", "y", "z"):
        store.write_bytes(f"c/{name}", b"1")
    assert [o.key for o in store.list("c/")] == ["c/a", "c/b", "c/c", "c/other", "c/x", "c/y", "c/z"]
    with pytest.raises(InvalidKey, match="reserved"):
        store.write_bytes("c/.full.snapshot.qbm-0123456789ab.part", b"x")


def test_abort_incomplete_removes_leftovers_of_a_crashed_write(store: LocalStorage, root: Path) -> None:
    store.write_bytes("c/b1/manifest.json", b"{}")
    (root / "c/b1/.full.snapshot.qbm-0123456789ab.part").write_bytes(b"half")
    (root / "c/b1/shards").mkdir()
    (root / "c/b1/shards/.0.snapshot.qbm-00000000000a.part").write_bytes(b"half")
    (root / "c/b2").mkdir()
    (root / "c/b2/.full.snapshot.qbm-0123456789ab.part").write_bytes(b"another backup's")

    assert store.abort_incomplete("c/b1/") == 2

    assert all_entries(root / "c") == ["b1", "b1/manifest.json",  # the emptied shards/ directory went too
                                       "b2", "b2/.full.snapshot.qbm-0123456789ab.part"]
    assert store.abort_incomplete("c/b1/") == 0
    with pytest.raises(InvalidKey, match="empty prefix"):
        store.abort_incomplete("")


def test_abort_incomplete_of_one_key_leaves_the_other_keys_leftovers(store: LocalStorage, root: Path) -> None:
    """A prefix that is not a directory ("c/b1/full" for c/b1/full.snapshot) matches the key a temp file belongs
    to, not its directory; at the root too."""
    for name in ("a", "b", "manifest.json", "z"):
        store.write_bytes(f"c/b1/{name}", b"kept")
    (root / "c/b1/.full.snapshot.qbm-0123456789ab.part").write_bytes(b"half")
    (root / "c/b1/.manifest.json.qbm-0123456789ab.part").write_bytes(b"half")
    (root / ".top.snapshot.qbm-0123456789ab.part").write_bytes(b"half")
    (root / ".other.qbm-0123456789ab.part").write_bytes(b"half")

    assert store.abort_incomplete("c/b1/full") == 1
    assert store.abort_incomplete("top") == 1

    assert all_entries(root) == [".other.qbm-0123456789ab.part", "c", "c/b1",
                                 "c/b1/.manifest.json.qbm-0123456789ab.part", "c/b1/a", "c/b1/b",
                                 "c/b1/manifest.json", "c/b1/z"]


def test_directory_in_the_way(store: LocalStorage, root: Path) -> None:
    (root / "a/b").mkdir(parents=True)
    with pytest.raises(StorageError, match="a directory is in the way"):
        store.write_bytes("a/b", b"x")
    assert all_entries(root) == ["a", "a/b"]


def test_file_in_the_way_of_a_directory(store: LocalStorage, root: Path) -> None:
    store.write_bytes("a", b"x")
    with pytest.raises(StorageError, match=r"is a file, not a directory"):
        store.write_bytes("a/b", b"y")
    assert store.read_bytes("a") == b"x"


# -- keys stay inside the root ------------------------------------------------------------------------------

BAD_KEYS = [
    "", "/etc/passwd", "../outside/secret", "a/../../outside/secret", "a/..", "..", ".", "a/./b", "a//b",
    "a/", "a\x00b", "a\\..\\b", "a\\b",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_everywhere(store: LocalStorage, root: Path, outside: Path, key: str) -> None:
    for operation in (
        lambda: store.write(key, [b"data"]),
        lambda: store.write_bytes(key, b"data"),
        lambda: store.open(key),
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.read_bytes(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKey):
            operation()
    assert all_entries(root) == []
    assert all_entries(outside) == ["secret"]
    assert (outside / "secret").read_bytes() == b"do not touch"


def test_bad_prefixes_are_rejected(store: LocalStorage, outside: Path) -> None:
    for prefix in ("/etc", "../outside/", "a/../../", "a//", "..", "a\x00"):
        with pytest.raises(InvalidKey):
            list(store.list(prefix))
        with pytest.raises(InvalidKey):
            store.delete_prefix(prefix)
    assert (outside / "secret").read_bytes() == b"do not touch"


def test_symlinked_directory_pointing_outside_is_not_followed(store: LocalStorage, root: Path,
                                                               outside: Path) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKey, match="outside"):
        store.write_bytes("link/new", b"x")
    with pytest.raises(InvalidKey):
        store.write_bytes("link/new/deeper/file", b"x")  # would need mkdir outside the root
    with pytest.raises(InvalidKey):
        store.write_bytes("link/secret", b"overwritten")
    with pytest.raises(InvalidKey):
        store.read_bytes("link/secret")
    with pytest.raises(InvalidKey):
        store.open("link/secret")
    with pytest.raises(InvalidKey):
        store.stat("link/secret")
    with pytest.raises(InvalidKey):
        store.delete("link/secret")
    with pytest.raises(InvalidKey):
        store.delete_prefix("link/")
    with pytest.raises(InvalidKey):
        list(store.list("link/"))

    assert [o.key for o in store.list()] == []  # the link's contents are not listed
    store.delete_prefix("li")  # string prefix matching "link": deletes nothing outside
    assert all_entries(outside) == ["secret"]
    assert (outside / "secret").read_bytes() == b"do not touch"


def test_symlinked_file_pointing_outside_is_rejected(store: LocalStorage, root: Path, outside: Path) -> None:
    (root / "leak").symlink_to(outside / "secret")

    with pytest.raises(InvalidKey):
        store.read_bytes("leak")
    with pytest.raises(InvalidKey):
        store.write_bytes("leak", b"overwritten")
    with pytest.raises(InvalidKey):
        store.delete("leak")
    assert [o.key for o in store.list()] == []
    assert (outside / "secret").read_bytes() == b"do not touch"


def test_symlinks_that_stay_inside_the_root_work(store: LocalStorage, root: Path) -> None:
    store.write_bytes("real/obj", b"payload")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)

    assert store.read_bytes("alias/obj") == b"payload"


def test_root_given_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    store = LocalStorage(tmp_path / "via")

    store.write_bytes("a/b", b"1")

    assert (tmp_path / "real/a/b").read_bytes() == b"1"
    assert [o.key for o in store.list()] == ["a/b"]


# -- check_local_path and from_config -----------------------------------------------------------------------


def test_check_local_path_accepts_paths_under_a_root(tmp_path: Path) -> None:
    roots = [tmp_path / "r1", tmp_path / "r2"]
    roots[1].mkdir()

    assert check_local_path(str(roots[1]), roots) == roots[1]
    assert check_local_path(str(roots[1] / "not/yet/created"), roots) == roots[1] / "not/yet/created"
    assert check_local_path(str(roots[0] / "x"), roots) == roots[0] / "x"  # root need not exist either
    assert check_local_path(f"{roots[1]}/a/../b", roots) == roots[1] / "b"


@pytest.mark.parametrize("relative", ["../elsewhere", "..", "sub/../../elsewhere"])
def test_check_local_path_rejects_dotdot_escapes(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    with pytest.raises(PathNotAllowed) as info:
        check_local_path(f"{root}/{relative}", [root])
    assert str(root) in str(info.value)  # the message names the allowed roots


def test_check_local_path_rejects_paths_outside_and_lookalike_siblings(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    for path in ("/etc", str(tmp_path / "backups2"), str(tmp_path / "backups-old/x"), str(tmp_path)):
        with pytest.raises(PathNotAllowed, match="allowed roots: " + str(root)):
            check_local_path(path, [root])


def test_check_local_path_follows_symlinks(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(PathNotAllowed, match=f"resolves to {outside}"):
        check_local_path(str(root / "link"), [root])
    with pytest.raises(PathNotAllowed):
        check_local_path(str(root / "link/not/yet/there"), [root])
    # and the other way round: a symlink outside that points into a root is fine
    (tmp_path / "door").symlink_to(root, target_is_directory=True)
    assert check_local_path(str(tmp_path / "door/sub"), [root]) == root / "sub"


def test_check_local_path_rejects_relative_empty_and_nul(tmp_path: Path) -> None:
    for path in ("backups", "", "/tmp/a\x00b"):
        with pytest.raises(PathNotAllowed):
            check_local_path(path, [tmp_path])
    with pytest.raises(PathNotAllowed, match="no local storage roots"):
        check_local_path(str(tmp_path), [])


def test_from_config_local(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    cfg = {"type": "local", "path": str(root / "qbm"), "s3_endpoint": None, "s3_bucket": None}

    store = from_config(cfg, allowed_roots=[root])

    assert isinstance(store, LocalStorage) and store.kind == "local"
    assert store.root == root / "qbm"
    store.write_bytes("x", b"1")
    assert (root / "qbm/x").read_bytes() == b"1"

    with pytest.raises(PathNotAllowed):
        from_config({"type": "local", "path": str(tmp_path / "elsewhere")}, allowed_roots=[root])
    with pytest.raises(StorageError, match="unknown storage type"):
        from_config({"type": "ftp"}, allowed_roots=[root])


def test_from_config_s3_needs_endpoint_and_bucket(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="s3_endpoint, s3_bucket"):
        from_config({"type": "s3", "s3_secret_key": "hunter2-secret"}, allowed_roots=[tmp_path])
    store = from_config({"type": "s3", "s3_endpoint": "https://s3.example.com:9000", "s3_bucket": "bkt",
                         "s3_region": "eu-west-1", "s3_access_key": "AK", "s3_secret_key": "hunter2-secret"},
                        allowed_roots=[])
    assert isinstance(store, S3Storage) and store.kind == "s3"
    assert "hunter2-secret" not in repr(store)


# -- list / stat / delete / read ----------------------------------------------------------------------------


def test_list_stat_exists_and_read(store: LocalStorage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    for key, data in [("b/2", b"22"), ("a/1", b"1"), ("a/sub/3", b"333"), ("ab", b"4444"), ("a.txt", b"5")]:
        store.write_bytes(key, data)

    assert [o.key for o in store.list()] == ["a.txt", "a/1", "a/sub/3", "ab", "b/2"]  # sorted, like S3
    assert [o.key for o in store.list("a/")] == ["a/1", "a/sub/3"]
    assert [o.key for o in store.list("a")] == ["a.txt", "a/1", "a/sub/3", "ab"]  # a plain string prefix
    assert [o.key for o in store.list("a/s")] == ["a/sub/3"]
    assert list(store.list("nothing/here/")) == []

    info = store.stat("a/sub/3")
    assert (info.key, info.size) == ("a/sub/3", 3)
    assert info.modified.tzinfo is not None and info.modified >= before
    assert all(o.modified.tzinfo is not None and o.modified >= before for o in store.list())  # aware, like S3's
    assert {o.key: o.size for o in store.list("b")} == {"b/2": 2}

    assert store.exists("ab") and not store.exists("a/2")
    assert not store.exists("a")  # a directory is not an object
    assert store.read_bytes("ab") == b"4444"
    with store.open("a/sub/3") as fh:
        assert fh.read(2) == b"33" and fh.read() == b"3"


def test_a_root_that_does_not_exist_yet_is_simply_empty(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "not/yet")

    assert list(store.list()) == [] and not store.exists("x")
    store.delete("x")
    store.delete_prefix("x/")
    assert not (tmp_path / "not").exists()  # reading and deleting create nothing


def test_missing_objects(store: LocalStorage) -> None:
    store.write_bytes("dir/obj", b"x")
    for key in ("missing", "dir", "dir/obj/deeper"):
        for operation in (store.stat, store.open, store.read_bytes):
            with pytest.raises(ObjectNotFound, match=f"no object '{key}' in {store.root}"):
                operation(key)


def test_read_bytes_refuses_big_objects(store: LocalStorage) -> None:
    store.write("big", chunks(3))
    with pytest.raises(StorageError, match="larger than"):
        store.read_bytes("big", max_size=2 * MiB)
    assert len(store.read_bytes("big", max_size=3 * MiB)) == 3 * MiB


def test_delete_is_idempotent_and_tidies_empty_directories(store: LocalStorage, root: Path) -> None:
    store.write_bytes("c/s1/full", b"1")
    store.write_bytes("c/s2/full", b"2")

    store.delete("c/s1/full")
    store.delete("c/s1/full")
    store.delete("never/existed")

    assert [o.key for o in store.list()] == ["c/s2/full"]
    assert all_entries(root) == ["c", "c/s2", "c/s2/full"]


def test_delete_prefix(store: LocalStorage, root: Path) -> None:
    for key in ("c/s1/full", "c/s1/manifest.json", "c/s1/shards/0", "c/s10/full", "c/s2/full", "d/x"):
        store.write_bytes(key, b"x")

    store.delete_prefix("c/s1/")
    assert [o.key for o in store.list()] == ["c/s10/full", "c/s2/full", "d/x"]
    assert not (root / "c/s1").exists()

    store.delete_prefix("c/")
    store.delete_prefix("c/")  # nothing left: no error
    assert [o.key for o in store.list()] == ["d/x"]
    assert all_entries(root) == ["d", "d/x"]

    with pytest.raises(InvalidKey, match="empty prefix"):
        store.delete_prefix("")
    assert store.exists("d/x")


def test_presigned_urls_are_not_a_local_thing(store: LocalStorage) -> None:
    with pytest.raises(NotImplementedError):
        store.presigned_get_url("x", timedelta(minutes=5))


# -- test() -------------------------------------------------------------------------------------------------


def test_connectivity_check_succeeds_and_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "will/be/created")

    ok, message = store.test()

    assert ok, message
    assert str(tmp_path / "will/be/created") in message
    assert all_entries(tmp_path / "will/be/created") == []


def test_connectivity_check_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")

    ok, message = LocalStorage(tmp_path / "plain-file/backups").test()

    assert not ok
    assert message == (f"cannot create directory {tmp_path / 'plain-file/backups'}: "
                       f"{tmp_path / 'plain-file'} is a file, not a directory")


def test_connectivity_check_when_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")

    ok, message = LocalStorage(tmp_path / "plain-file").test()

    assert (ok, message) == (False, f"storage path {tmp_path / 'plain-file'} is a file, not a directory")


def test_connectivity_check_permission_denied() -> None:
    """Root ignores directory permissions, so when the tests run as root the check runs in a forked child
    that first drops to ``nobody`` (the code is already loaded, so the child needs no access to it)."""
    base = Path(tempfile.mkdtemp(prefix="qbm-perm-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                ok, text = LocalStorage(locked).test()
                os.write(write_end, f"{ok}\n{text}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            output = pipe.read()
        os.waitpid(pid, 0)
        ok, message = output.split("\n", 1)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    assert ok == "False"
    assert message.startswith(f"permission denied writing {locked}/.qbm-probe-")
