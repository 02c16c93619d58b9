"""Backups in a directory on this machine (or a mounted volume).

Two properties matter more than speed here:

* Confinement. Keys come from collection names and snapshot names, i.e. partly from outside. Every key is
  validated and its resolved path (symlinks followed, including symlinked parent directories) must stay inside
  the root *before* anything is created, so nothing outside the root is ever touched.
* Crash safety. A backup that looks complete but is truncated is worse than no backup. Writes go to a temp
  file in the target directory, are fsynced, renamed into place and the directory is fsynced; temp files are
  never listed and are removed on any failure or cancellation.

Writeback of each ``WRITEBACK_WINDOW`` starts as soon as it is written (``sync_file_range``, as PostgreSQL's
``*_flush_after`` settings do), so the disk works while the rest arrives instead of all of it waiting for the
final fsync (2 GiB to this machine's disk: 3.4 s -> 2.8 s). It is a hint the kernel may ignore: correctness
rests on the fsync alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat as stat_mod
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from .base import (
    TEMP_NAME_RE,
    ChunkFeed,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    PermissionDenied,
    Readable,
    Storage,
    StorageError,
    WriteResult,
    validate_key,
    validate_prefix,
)


class LocalStorage(Storage):
    """A directory holding objects as plain files; the key is the path relative to the root.

    The root does not have to exist yet: it is created on the first write (and by :meth:`test`), so a storage
    config can be saved before the volume is prepared, and :meth:`test` tells the user what is wrong with it.
    """

    kind = "local"

    def __init__(self, root: Path | str) -> None:
        # Resolved once: a later change of a symlink on the way to the root cannot move the store elsewhere.
        self.root = Path(os.path.realpath(os.fspath(root)))

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r})"

    # -- paths -----------------------------------------------------------------------------------------------

    def _inside(self, real: str) -> bool:
        root = str(self.root)
        return real == root or real.startswith(root.rstrip("/") + "/")

    def _path(self, key: str) -> Path:
        """The resolved file path for ``key``; raises InvalidKey if it would leave the root."""
        validate_key(key)
        real = os.path.realpath(os.path.join(self.root, key))
        if not self._inside(real) or real == str(self.root):
            raise InvalidKey(f"storage key {key!r} resolves outside the storage root {self.root}")
        return Path(real)

    def _file(self, key: str) -> tuple[Path, os.stat_result]:
        """Path and stat of an existing regular file at ``key``; anything else is ObjectNotFound."""
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise _os_error(exc, "reading", path) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"no object {key!r} in {self.root} ({path} is not a regular file)")
        return path, st

    # -- writing ---------------------------------------------------------------------------------------------

    def write(self, key: str, chunks: Iterable[bytes] | Readable, *,
              on_progress: Callable[[int], None] | None = None, should_continue: Callable[[], bool] | None = None,
              size_hint: int | None = None) -> WriteResult:
        path = self._path(key)
        feed = ChunkFeed(chunks, key, on_progress=on_progress, should_continue=should_continue)
        fd, tmp = self._create_temp(key, path)
        try:
            try:
                # Only our own file operations are mapped to StorageError: an OSError raised by the chunk
                # iterator (requests' ConnectionError is one) belongs to the source and propagates unchanged.
                writeback = _Writeback(fd)
                while (chunk := feed.next_chunk()) is not None:
                    _write_all(fd, chunk, path)
                    writeback.wrote(len(chunk))
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise _os_error(exc, "writing", path) from exc
            finally:
                try:
                    os.close(fd)
                except OSError as exc:  # e.g. a deferred write error on a network file system
                    raise _os_error(exc, "writing", path) from exc
            try:
                os.replace(tmp, path)
            except IsADirectoryError:
                raise StorageError(f"cannot write {path}: a directory is in the way") from None
            except OSError as exc:
                raise _os_error(exc, "writing", path) from exc
        except BaseException:
            _remove_quietly(tmp)
            self._prune(path.parent)  # directories this write created are not left behind either
            raise
        _fsync_dir(path.parent)
        return feed.result()

    def _create_temp(self, key: str, path: Path) -> tuple[int, Path]:
        """Make the parent directories and open a fresh temp file next to ``path``.

        Retried a few times because a concurrent delete may prune an (empty) parent directory between our
        ``mkdir`` and ``open``.
        """
        name = f".{path.name[:200]}.qbm-{secrets.token_hex(6)}.part"
        for attempt in range(3):
            self._makedirs(path.parent)
            # Re-check after mkdir: a symlink swapped in meanwhile must not redirect the write.
            if not self._inside(os.path.realpath(path.parent)):
                raise InvalidKey(f"storage key {key!r} resolves outside the storage root {self.root}")
            tmp = path.parent / name
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                return os.open(tmp, flags, 0o666), tmp
            except FileNotFoundError:
                if attempt == 2:
                    raise StorageError(f"cannot write {path}: its directory keeps disappearing") from None
            except OSError as exc:
                raise _os_error(exc, "writing", path) from exc
        raise AssertionError("unreachable")

    def _makedirs(self, directory: Path) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = _first_non_directory(directory)
            raise StorageError(f"cannot create directory {directory}: {blocker} is a file, not a directory"
                               ) from None
        except OSError as exc:
            raise _os_error(exc, "creating directory", directory) from exc

    # -- reading ---------------------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        path, _ = self._file(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise _os_error(exc, "reading", path) from exc

    def stat(self, key: str) -> ObjectInfo:
        _, st = self._file(key)
        return ObjectInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        dir_part = prefix.rpartition("/")[0]
        start = os.path.join(self.root, dir_part) if dir_part else str(self.root)
        if not self._inside(os.path.realpath(start)):
            raise InvalidKey(f"storage prefix {prefix!r} resolves outside the storage root {self.root}")
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start, onerror=self._walk_error):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if TEMP_NAME_RE.match(name):
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if not key.startswith(prefix):
                    continue
                full = os.path.join(dirpath, name)
                if not self._inside(os.path.realpath(full)):
                    continue  # a symlink pointing out of the root is not ours to show
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # deleted meanwhile, or a dangling symlink
                if stat_mod.S_ISREG(st.st_mode):
                    found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda info: info.key)
        return iter(found)

    def _walk_error(self, exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            return  # the prefix's directory does not exist: nothing to list
        raise _os_error(exc, "listing", Path(exc.filename or self.root)) from exc

    # -- deleting --------------------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self._unlink(path):
            self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> None:
        validate_prefix(prefix)
        if not prefix:
            raise InvalidKey("refusing to delete with an empty prefix (that would delete everything)")
        parents: set[Path] = set()
        for info in self.list(prefix):
            path = self._path(info.key)
            if self._unlink(path):
                parents.add(path.parent)
        # Empty directories left under the prefix (e.g. "a/b/" after deleting its files) go too.
        dir_part = prefix.rpartition("/")[0]
        start = os.path.join(self.root, dir_part) if dir_part else str(self.root)
        for dirpath, _dirnames, _files in os.walk(start, topdown=False):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            if rel != "." and (rel + "/").startswith(prefix):
                parents.add(Path(dirpath))
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            self._prune(parent)

    def abort_incomplete(self, prefix: str) -> int:
        validate_prefix(prefix)
        if not prefix:
            raise InvalidKey("refusing to clean up with an empty prefix")
        dir_part = prefix.rpartition("/")[0]
        start = os.path.join(self.root, dir_part) if dir_part else str(self.root)
        if not self._inside(os.path.realpath(start)):
            raise InvalidKey(f"storage prefix {prefix!r} resolves outside the storage root {self.root}")
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(start, topdown=False):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in filenames:
                match = TEMP_NAME_RE.match(name)
                if not match:
                    continue
                # ".<name>.qbm-<hex>.part" belongs to the key "<dir>/<name>"
                target = name[1:].rsplit(".qbm-", 1)[0]
                key = target if rel_dir == "." else f"{rel_dir}/{target}"
                if key.startswith(prefix) and self._unlink(Path(dirpath) / name):
                    removed += 1
            if rel_dir != "." and (rel_dir + "/").startswith(prefix):
                self._prune(Path(dirpath))
        return removed

    def _unlink(self, path: Path) -> bool:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except IsADirectoryError:
            return False  # a directory is not an object (same as S3: no object at that key)
        except OSError as exc:
            if exc.errno == errno.EPERM and path.is_dir():
                return False
            raise _os_error(exc, "deleting", path) from exc
        return True

    def _prune(self, directory: Path) -> None:
        """Remove now-empty directories from ``directory`` up to (not including) the root."""
        current = directory
        while current != self.root and self._inside(str(current)):
            try:
                os.rmdir(current)
            except OSError:
                return  # not empty (or gone, or not ours to remove): stop climbing
            current = current.parent

    # -- connectivity ----------------------------------------------------------------------------------------

    _probe_noun = "file"

    def test(self) -> tuple[bool, str]:
        """As every backend's, and the test leaves nothing behind: folders it had to create for the probe
        (the root and any missing parents) are removed again when they are empty."""
        missing = [d for d in (self.root, *self.root.parents) if not d.exists()]
        try:
            return super().test()
        finally:
            for directory in missing:  # deepest first
                try:
                    directory.rmdir()
                except OSError:
                    break  # not empty (someone else's now) or not ours to remove: stop climbing

    @property
    def _where(self) -> str:
        return str(self.root)

    def _unusable(self) -> str | None:
        if self.root.exists() and not self.root.is_dir():
            return f"storage path {self.root} is a file, not a directory"
        return None

    def _describe_test_failure(self, exc: Exception) -> str:
        if isinstance(exc, OSError):  # defensive: every path of a write maps its own errors
            return _os_error(exc, "testing", self.root).args[0]
        return super()._describe_test_failure(exc)


def _os_error(exc: OSError, action: str, path: Path) -> StorageError:
    """Turn an OSError into a message a person can act on ("permission denied writing /backups/x")."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"permission denied {action} {path}")
    if code == errno.EROFS:
        return PermissionDenied(f"read-only file system: cannot write {path}")
    if code == errno.ENOSPC:
        return StorageError(f"no space left on device {action} {path}")
    if code == errno.EDQUOT:
        return StorageError(f"disk quota exceeded {action} {path}")
    if code == errno.ENAMETOOLONG:
        return InvalidKey(f"file name too long: {path}")
    reason = exc.strerror or str(exc)
    return StorageError(f"{action} {path} failed: {reason}")


def _first_non_directory(directory: Path) -> Path:
    """The existing path component that blocks ``mkdir -p directory`` (a regular file on the way)."""
    for candidate in [*reversed(directory.parents), directory]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return directory


def _write_all(fd: int, chunk: bytes | memoryview, path: Path) -> None:
    view = memoryview(chunk)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            raise _os_error(exc, "writing", path) from exc
        view = view[written:]


#: Writeback of a file being written is started every this many bytes (see the module docstring).
WRITEBACK_WINDOW = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux; the os module has no binding), or None where there is none."""
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_start_range_writeback = _sync_file_range()


class _Writeback:
    """Starts writeback of every ``WRITEBACK_WINDOW`` written to ``fd``; gives up quietly where unsupported."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._written = 0
        self._started = 0
        self._enabled = _start_range_writeback is not None

    def wrote(self, count: int) -> None:
        self._written += count
        if not self._enabled or self._written - self._started < WRITEBACK_WINDOW:
            return
        assert _start_range_writeback is not None
        if _start_range_writeback(self._fd, self._started, self._written - self._started,
                                  _SYNC_FILE_RANGE_WRITE) != 0:
            self._enabled = False  # e.g. a file system without it; write errors still surface at fsync
        self._started = self._written


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable. File systems that cannot fsync a directory are tolerated."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise _os_error(exc, "syncing directory", directory) from exc
    finally:
        os.close(fd)
