"""The one small interface every storage backend implements, plus the pieces they share.

Backups are streamed: a snapshot can be far larger than memory, so ``write`` consumes an iterator of chunks
and hashes while it writes, and readers get streams. Backends differ (a directory, an S3 bucket) but
callers -- the backup and restore workers, retention, the API's "test connection" button -- only see this
module.

Keys are relative POSIX-style names (``collection/2026-11-24T02:15:00Z/full.snapshot``). They are validated
the same way for every backend so that a backup written to one backend can be copied to another unchanged.
"""

from __future__ import annotations

import abc
import hashlib
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol

MiB = 1024 * 1024
#: Probe objects written by ``test()`` start with this (never a backup key: those start with a collection).
PROBE_PREFIX = ".qbm-probe-"
DEFAULT_CHUNK_SIZE = 1 * MiB
DEFAULT_MAX_READ_BYTES = 16 * MiB
MAX_KEY_LENGTH = 1024  # S3's limit (bytes of UTF-8); applied everywhere so keys stay portable

# Temporary files of an unfinished local write are named like this; such names are reserved (never valid keys)
# so that listing can skip them without ever hiding a real object.
TEMP_NAME_RE = re.compile(r"^\..*\.qbm-[0-9a-f]{12}\.part$")


class StorageError(Exception):
    """A backend failure. The message is for a person (what failed, where) and never contains secrets."""


class InvalidKey(StorageError):
    """The key is not a clean relative name (absolute, ``..``, NUL, empty component) or escapes the root."""


class PathNotAllowed(StorageError):
    """A local storage path is not under any of the configured allowed roots."""


class ObjectNotFound(StorageError):
    """The key names no object."""


class BucketNotFound(StorageError):
    """The configured S3 bucket does not exist."""


class PermissionDenied(StorageError):
    """The backend refused the operation (file permissions, S3 access denied, bad credentials)."""


class WrongRegion(StorageError):
    """S3 refused a request signed for another region than the bucket's: the configured region is wrong."""


class StorageUnavailable(StorageError):
    """The backend could not be reached (connection refused, DNS, TLS, timeout): usually worth a retry."""


class Cancelled(StorageError):
    """The ``should_continue`` callback asked to stop; nothing was left behind at the key."""


@dataclass(frozen=True)
class WriteResult:
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a clean relative object name, else raise :class:`InvalidKey`.

    One canonical spelling per object (no ``.``, empty components or trailing slash) keeps local and S3
    listings identical, and rejecting ``..``/absolute names/NUL/backslashes is the first line of defence
    against writing outside a local root.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"storage key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("storage key must not be empty")
    _check_chars(key)
    if key.startswith("/"):
        raise InvalidKey(f"storage key {key!r} must be relative (no leading '/')")
    for part in key.split("/"):
        _check_component(key, part)
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: like a key, but may be empty, end with ``/`` or end in a partial name."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"storage prefix must be a string, not {type(prefix).__name__}")
    if not prefix:
        return prefix
    _check_chars(prefix)
    if prefix.startswith("/"):
        raise InvalidKey(f"storage prefix {prefix!r} must be relative (no leading '/')")
    parts = prefix.split("/")
    for part in parts[:-1]:
        _check_component(prefix, part)
    if parts[-1] in (".", ".."):
        raise InvalidKey(f"storage prefix {prefix!r} must not contain '.' or '..' components")
    return prefix


def _check_chars(key: str) -> None:
    if "\x00" in key:
        raise InvalidKey(f"storage key {key!r} contains a NUL character")
    if "\\" in key:
        raise InvalidKey(f"storage key {key!r} contains a backslash; use '/' to separate components")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_LENGTH:
        raise InvalidKey(f"storage key is longer than {MAX_KEY_LENGTH} bytes")


def _check_component(key: str, part: str) -> None:
    if part == "":
        raise InvalidKey(f"storage key {key!r} has an empty component ('//' or a trailing '/')")
    if part in (".", ".."):
        raise InvalidKey(f"storage key {key!r} must not contain '.' or '..' components")
    if TEMP_NAME_RE.match(part):
        raise InvalidKey(f"storage key {key!r} uses a name reserved for temporary files")


#: Chunks at least this big are hashed on a helper thread (hashlib releases the GIL while it hashes them), so
#: hashing one chunk overlaps receiving and writing the next instead of adding to it (sha256 on one core costs
#: about as much as the copy itself). Smaller chunks (manifests) are hashed inline.
HASH_OFFLOAD_MIN = 256 * 1024
#: Bytes handed to the hashing thread and not hashed yet, at most (bounded memory: two 4 MiB download chunks).
HASH_BACKLOG_BYTES = 8 * MiB
#: A :class:`Readable` source is read into this many reused buffers of this size: one being filled, one with the
#: caller (being written), one being hashed. Reusing them spares a fresh allocation, and the copies and page
#: faults that come with it, per chunk (the before/after figures are in bench/RESULTS.md).
READ_BUFFER_SIZE = 4 * MiB
READ_BUFFERS = 3


class Readable(Protocol):
    """A byte source that fills the caller's buffer, like ``io.RawIOBase.readinto``: returns how many bytes it
    put at the start of ``buffer``, 0 only at the end. A snapshot download is one (``SnapshotDownload``)."""

    def readinto(self, buffer: memoryview, /) -> int: ...


class _BackgroundHash:
    """Feeds one hash object on its own thread, in order, at most ``HASH_BACKLOG_BYTES`` behind (and always
    at least one chunk, whatever its size)."""

    def __init__(self, digest: hashlib._Hash) -> None:
        self._digest = digest
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qbm-sha256")
        self._pending: deque[tuple[Future[None], int]] = deque()
        self._backlog = 0

    def update(self, chunk: bytes | memoryview) -> Future[None]:
        """Queue ``chunk``; the returned future is done once it is hashed (only then may its buffer change)."""
        while self._pending and self._backlog + len(chunk) > HASH_BACKLOG_BYTES:
            self._wait_oldest()
        future = self._executor.submit(self._digest.update, chunk)
        self._pending.append((future, len(chunk)))
        self._backlog += len(chunk)
        return future

    def _wait_oldest(self) -> None:
        future, size = self._pending.popleft()
        self._backlog -= size
        future.result()

    def hexdigest(self) -> str:
        while self._pending:
            self._wait_oldest()
        self._executor.shutdown(wait=True)
        return self._digest.hexdigest()


class _ReadRing:
    """``READ_BUFFERS`` reused buffers a :class:`Readable` is read into in turn. A buffer whose chunk went to the
    hashing thread is refilled only once that hash is done; the ring moves on to the next buffer only then."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._buffers = [memoryview(bytearray(READ_BUFFER_SIZE)) for _ in range(READ_BUFFERS)]
        self._hashing: list[Future[None] | None] = [None] * READ_BUFFERS
        self._turn = 0

    def read(self) -> memoryview:
        """The next chunk, in the current buffer; empty at the end of the source."""
        pending = self._hashing[self._turn]
        if pending is not None:
            pending.result()  # the buffer's previous chunk must be hashed before it is overwritten
            self._hashing[self._turn] = None
        buffer = self._buffers[self._turn]
        count = self._source.readinto(buffer)
        if not isinstance(count, int) or count < 0 or count > len(buffer):
            raise TypeError(f"readinto() of the source returned {count!r}, not a byte count")
        return buffer[:count]

    def hashing(self, done: Future[None]) -> None:
        """The chunk just read is being hashed on the helper thread: keep its buffer until ``done``."""
        self._hashing[self._turn] = done
        self._turn = (self._turn + 1) % READ_BUFFERS


class ChunkFeed:
    """Pull chunks from the caller's source, hashing and counting them, and honour the two callbacks.

    Both backends consume the stream through this so that size/sha256 describe exactly the bytes handed to
    the backend, and cancellation/progress behave the same everywhere. ``should_continue`` is asked before
    every chunk (and once more before accepting end-of-stream), ``on_progress`` after every chunk. Large chunks
    are hashed on a helper thread (see ``HASH_OFFLOAD_MIN``); :meth:`result` waits for it.

    The source is an iterable of ``bytes`` chunks, or a :class:`Readable`, which is read into
    ``READ_BUFFERS`` reused buffers (see ``READ_BUFFER_SIZE``). Either way a chunk returned by
    :meth:`next_chunk` is only valid until the next call: a backend copies or writes it before asking again.
    """

    def __init__(self, source: Iterable[bytes] | Readable, key: str, *,
                 on_progress: Callable[[int], None] | None = None,
                 should_continue: Callable[[], bool] | None = None) -> None:
        self._ring = _ReadRing(source) if hasattr(source, "readinto") else None  # type: ignore[arg-type]
        self._it = None if self._ring is not None else iter(source)  # type: ignore[arg-type]
        self._key = key
        self._on_progress = on_progress
        self._should_continue = should_continue
        self._hash = hashlib.sha256()
        self._background: _BackgroundHash | None = None
        self.size = 0
        self.done = False

    def next_chunk(self) -> bytes | memoryview | None:
        """The next non-empty chunk, or None at the end. Empty chunks are skipped (they are not EOF)."""
        while not self.done:
            if self._should_continue is not None and not self._should_continue():
                raise Cancelled(f"write of {self._key!r} was cancelled")
            chunk = self._pull()
            if chunk is None:
                self.done = True
                return None
            if not chunk:
                continue
            if self._background is None and len(chunk) >= HASH_OFFLOAD_MIN:
                self._background = _BackgroundHash(self._hash)  # from now on every chunk goes there, in order
            if self._background is not None:
                hashed = self._background.update(chunk)
                if self._ring is not None:
                    self._ring.hashing(hashed)
            else:
                self._hash.update(chunk)
            self.size += len(chunk)
            if self._on_progress is not None:
                self._on_progress(self.size)
            return chunk
        return None

    def _pull(self) -> bytes | memoryview | None:
        """One chunk from the source (maybe empty), None at its end."""
        if self._ring is not None:
            return self._ring.read() or None  # a readable source is empty only at its end
        try:
            chunk = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            return None
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"chunks must be bytes, got {type(chunk).__name__}")
        return bytes(chunk)

    def result(self) -> WriteResult:
        digest = self._background.hexdigest() if self._background is not None else self._hash.hexdigest()
        return WriteResult(size=self.size, sha256=digest)


class Storage(abc.ABC):
    """A place to keep backups: ``LocalStorage`` (a directory) or ``S3Storage`` (a bucket)."""

    kind: str

    @abc.abstractmethod
    def write(self, key: str, chunks: Iterable[bytes] | Readable, *,
              on_progress: Callable[[int], None] | None = None, should_continue: Callable[[], bool] | None = None,
              size_hint: int | None = None) -> WriteResult:
        """Stream ``chunks`` (an iterable of ``bytes``, or a :class:`Readable`) to ``key`` with bounded memory;
        return size and sha256 of what was written.

        ``size_hint`` is the expected size when the caller knows it (a snapshot's listed size); a backend may
        use it to size its buffers (S3: the part size) but never trusts it.

        Atomic: nothing is visible at ``key`` until every chunk is stored (an existing object stays intact
        until then). On any exception -- from the backend, from the chunk iterator, or :class:`Cancelled` when
        ``should_continue()`` returns False -- no partial object, temp file or incomplete upload remains.
        Exceptions raised by the chunk iterator (or ``readinto``) or the callbacks propagate unchanged.
        """

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming reader (``.read(n)``, context manager). Raises :class:`ObjectNotFound`."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time. Raises :class:`ObjectNotFound`."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix, as in S3), sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; a missing object is not an error (deletes are retried by retention)."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix``. An empty prefix is refused: it would wipe the whole store."""

    @abc.abstractmethod
    def abort_incomplete(self, prefix: str) -> int:
        """Remove what interrupted writes under ``prefix`` left behind; return how many were removed.

        A worker killed mid-write (SIGKILL, OOM, power loss) cannot clean up after itself: a local temp file
        or an S3 incomplete multipart upload (billed, invisible in listings) remains. Call this before
        retrying a write under ``prefix``, and only while no other write under it is running -- an
        in-progress write there would fail. An empty prefix is refused.
        """

    def read_bytes(self, key: str, max_size: int = DEFAULT_MAX_READ_BYTES) -> bytes:
        """Read a small object (a manifest) whole; over ``max_size`` is an error, not a memory spike."""
        with self.open(key) as reader:
            data = reader.read(max_size + 1)
            while len(data) <= max_size:
                more = reader.read(max_size + 1 - len(data))
                if not more:
                    break
                data += more
        if len(data) > max_size:
            raise StorageError(f"object {key!r} is larger than {max_size} bytes; refusing to read it whole")
        return data

    def write_bytes(self, key: str, data: bytes) -> WriteResult:
        return self.write(key, [data])

    def test(self) -> tuple[bool, str]:
        """Write, read back and remove a probe object: proves the location, credentials and write permission.
        Returns ``(ok, message)``; never raises for backend failures."""
        problem = self._unusable()
        if problem:
            return False, problem
        probe = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        payload = b"qbm storage probe\n"
        try:
            self.write_bytes(probe, payload)
            try:
                if self.read_bytes(probe) != payload:
                    return False, f"a test {self._probe_noun} written to {self._where} read back differently"
            finally:
                self.delete(probe)
        except StorageError as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - test() reports, it does not raise
            return False, self._describe_test_failure(exc)
        return True, f"wrote, read back and removed a test {self._probe_noun} in {self._where}"

    #: What the probe is called in test()'s messages, and where it goes.
    _probe_noun = "object"

    @property
    @abc.abstractmethod
    def _where(self) -> str:
        """The location, as test()'s messages name it (``/backups``, ``bucket 'b' at https://...``)."""

    def _unusable(self) -> str | None:
        """Why a probe need not even be tried (None: try it)."""
        return None

    def _describe_test_failure(self, exc: Exception) -> str:
        return f"testing {self._where} failed: {exc}"

    def presigned_get_url(self, key: str, expires: timedelta) -> str:
        """A time-limited URL anyone can GET (lets Qdrant download a snapshot straight from S3)."""
        raise NotImplementedError(f"{self.kind} storage cannot produce presigned URLs")
