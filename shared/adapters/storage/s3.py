"""Backups in an S3 bucket (AWS S3, MinIO or any S3-compatible service), through the ``minio`` client.

Snapshots are streamed with a multipart upload of unknown length, driven here rather than by minio's
``put_object``: the caller's chunks are hashed as they are taken and packed into parts, and while one part is
being filled up to ``parallel_parts`` (2) earlier parts are uploading on a small executor of our own, so
reading the source, hashing, signing and the server's work on a part overlap instead of taking turns (the
figures are in bench/RESULTS.md). Memory is bounded by ``parallel_parts + 1`` parts. The multipart calls are
minio's private ones, fenced in :mod:`.minio_multipart`. minio's own parallel mode is not used: it leaves its
worker threads behind and races part uploads against the abort when the source fails; ours waits for every
part in flight before it aborts.

Multipart uploads become visible only when completed, so a failed or cancelled write leaves no object: on any
exception (the source's, S3's, or a BaseException such as a worker shutdown) the upload is aborted, best effort.

Every error message is built here from the endpoint, bucket and key -- never from the credentials -- and is
scrubbed of the secret key anyway, because messages end up in job records and API responses.
"""

from __future__ import annotations

import io
import logging
import math
import os
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import MIN_PART_SIZE, check_bucket_name

from shared.runtime.logs import register_secret

from .base import (
    BucketNotFound,
    ChunkFeed,
    ObjectInfo,
    ObjectNotFound,
    PermissionDenied,
    Readable,
    Storage,
    StorageError,
    StorageUnavailable,
    WriteResult,
    WrongRegion,
    validate_key,
    validate_prefix,
)
from .minio_multipart import Multipart

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB  # 10,000 parts (S3's limit) x 16 MiB = 156 GiB per object
MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
DEFAULT_PARALLEL_PARTS = 2  # parts uploading while the next one is filled
MAX_PRESIGN_EXPIRY = timedelta(days=7)  # SigV4 limit


class S3Storage(Storage):
    """One bucket of an S3-compatible service; keys are object names in the bucket."""

    kind = "s3"

    def __init__(self, endpoint: str, bucket: str, region: str | None, access_key: str, secret_key: str,
                 part_size: int = DEFAULT_PART_SIZE, parallel_parts: int = DEFAULT_PARALLEL_PARTS) -> None:
        self._secret = secret_key or ""
        register_secret(self._secret)  # scrubbed from every log line of this process from now on
        self.endpoint, host, secure = _parse_endpoint(endpoint)
        self.bucket = bucket
        self.region = region or None
        if not bucket:
            raise StorageError("an S3 storage needs a bucket name")
        try:
            check_bucket_name(bucket, s3_check=host.endswith("amazonaws.com"))
        except ValueError:
            raise StorageError(f"invalid bucket name {bucket!r} (S3 bucket names are 3-63 characters: "
                               "lowercase letters, digits, dots and hyphens)") from None
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)")
        self.part_size = part_size
        if parallel_parts < 1:
            raise ValueError("parallel_parts must be at least 1")
        self.parallel_parts = parallel_parts
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            # Fewer retries than minio's default (5), and one for connecting: "test connection" on a dead
            # endpoint answers at once, and jobs have their own retries for longer outages.
            retries=urllib3.Retry(total=3, connect=1, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]),
        )
        try:
            self._client = Minio(host, access_key=access_key or None, secret_key=secret_key or None,
                                 secure=secure, region=self.region, http_client=http)
        except ValueError as exc:
            raise StorageError(self._scrub(f"invalid S3 settings for {self.endpoint}: {exc}")) from None
        self._multipart = Multipart(self._client, self.bucket)

    def __repr__(self) -> str:
        names = ("endpoint", "bucket", "region")
        fields = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in names)
        return f"S3Storage({fields})"

    # -- writing ---------------------------------------------------------------------------------------------

    def write(self, key: str, chunks: Iterable[bytes] | Readable, *,
              on_progress: Callable[[int], None] | None = None, should_continue: Callable[[], bool] | None = None,
              size_hint: int | None = None) -> WriteResult:
        """See :meth:`Storage.write`. ``on_progress`` counts bytes taken from ``chunks``; those run at most
        ``parallel_parts + 1`` parts ahead of what the server has acknowledged. ``size_hint`` (the expected
        size, if known) only chooses the part size: large enough for the object to fit in 10,000 parts."""
        validate_key(key)
        feed = ChunkFeed(chunks, key, on_progress=on_progress, should_continue=should_continue)
        parts = _PartReader(feed, self.part_size_for(size_hint))
        try:
            first = parts.first_part()
            if parts.at_end():  # it fits in one part: a plain PUT
                self._client.put_object(self.bucket, key, io.BytesIO(first), len(first),
                                        part_size=parts.part_size, num_parallel_uploads=1)
                return feed.result()
        except BaseException as exc:
            if not isinstance(exc, Exception) or exc is parts.error:
                raise
            raise self._error(exc, key, "writing") from exc
        self._write_parts(key, first, parts)
        return feed.result()

    def part_size_for(self, size: int | None) -> int:
        """``part_size``, or more when ``size`` bytes would need 10,000 parts or more (whole MiB, ~9,000 parts)."""
        if not size or size <= 0:
            return self.part_size
        return max(self.part_size, math.ceil(size / (MAX_PARTS - 1000) / MiB) * MiB)

    def _write_parts(self, key: str, first: bytearray, parts: _PartReader) -> None:
        """Multipart upload: ``parallel_parts`` parts upload on our executor while the next is being filled."""
        try:
            upload_id = self._multipart.create(key)
        except Exception as exc:
            raise self._error(exc, key, "writing") from exc
        done: list[Part] = []
        in_flight: deque[tuple[int, Future[str], bytes | bytearray]] = deque()
        spare: list[bytearray] = []  # buffers of sent parts, refilled: parallel_parts + 1 buffers per write
        executor = ThreadPoolExecutor(max_workers=self.parallel_parts, thread_name_prefix="qbm-s3-part")
        try:
            number, data = 1, first  # type: int, bytes | bytearray | None
            while data is not None:
                if number > MAX_PARTS:
                    raise StorageError(f"{key!r} is larger than {MAX_PARTS} parts of {parts.part_size} bytes; "
                                       "S3 cannot store it in one object")
                while len(in_flight) >= self.parallel_parts:
                    finished, future, sent = in_flight.popleft()
                    done.append(Part(finished, future.result()))
                    if isinstance(sent, bytearray):
                        spare.append(sent)
                in_flight.append((number, executor.submit(self._multipart.upload_part, key, upload_id, number, data),
                                  data))
                number, data = number + 1, None
                data = parts.next_part(spare.pop() if spare else None)
            while in_flight:
                finished, future, _ = in_flight.popleft()
                done.append(Part(finished, future.result()))
            self._multipart.complete(key, upload_id, done)
        except BaseException as exc:
            # Abort only once no part is still being sent: a part landing after the abort would stay (and cost).
            for _, future, _ in in_flight:
                future.cancel()
            wait([future for _, future, _ in in_flight])
            self._abort_upload(key, upload_id)
            if not isinstance(exc, Exception) or exc is parts.error or isinstance(exc, StorageError):
                raise
            raise self._error(exc, key, "writing") from exc
        finally:
            executor.shutdown(wait=True)

    def _abort_upload(self, key: str, upload_id: str) -> None:
        """Best effort, after a failed write: abort our multipart upload (a warning if that fails too)."""
        try:
            self._multipart.abort(key, upload_id)
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the original failure
            log.warning("could not abort an incomplete upload of %r in bucket %r: %s (a bucket lifecycle "
                        "rule for incomplete multipart uploads cleans these up)", key, self.bucket,
                        self._error(exc, key, "cleaning up"))

    def abort_incomplete(self, prefix: str) -> int:
        validate_prefix(prefix)
        if not prefix:
            raise StorageError("refusing to clean up with an empty prefix")
        try:
            return self._abort_uploads(prefix, exact=False)
        except Exception as exc:
            raise self._error(exc, None, "aborting incomplete uploads in") from exc

    def _abort_uploads(self, prefix: str, *, exact: bool) -> int:
        # minio 7.2.20 does not parse NextUploadIdMarker (a typo in ListMultipartUploadsResult), so instead
        # of paging we list again from the start: aborted uploads drop out of the listing.
        aborted = 0
        for _ in range(1000):
            result = self._multipart.list(prefix)
            doomed = [u for u in result.uploads if u.upload_id and (not exact or u.object_name == prefix)]
            for upload in doomed:
                self._multipart.abort(upload.object_name, upload.upload_id)
            aborted += len(doomed)
            if not result.is_truncated or not doomed:
                break
        return aborted

    # -- reading ---------------------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        validate_key(key)
        try:
            response = self._client.get_object(self.bucket, key)
        except Exception as exc:
            raise self._error(exc, key, "reading") from exc
        return _ObjectReader(response, lambda exc: self._error(exc, key, "reading"))  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        try:
            obj = self._client.stat_object(self.bucket, key)
        except Exception as exc:
            raise self._error(exc, key, "reading") from exc
        return ObjectInfo(key=key, size=int(obj.size or 0), modified=obj.last_modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                if obj.is_dir or obj.object_name is None:
                    continue
                yield ObjectInfo(key=obj.object_name, size=int(obj.size or 0), modified=obj.last_modified)
        except Exception as exc:
            raise self._error(exc, None, "listing") from exc

    # -- deleting --------------------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            self._client.remove_object(self.bucket, key)
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise self._error(exc, key, "deleting") from exc
        except Exception as exc:
            raise self._error(exc, key, "deleting") from exc

    def delete_prefix(self, prefix: str) -> None:
        validate_prefix(prefix)
        if not prefix:
            raise StorageError("refusing to delete with an empty prefix (that would delete the whole bucket)")
        try:
            doomed = (DeleteObject(info.key) for info in self._list(prefix))
            failures = [err for err in self._client.remove_objects(self.bucket, doomed)]
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc, None, "deleting") from exc
        if failures:
            first = failures[0]
            raise StorageError(self._scrub(
                f"could not delete {len(failures)} object(s) under {prefix!r} in bucket {self.bucket!r}; "
                f"first: {first.name!r}: {first.code}: {first.message}"))

    # -- connectivity, URLs ----------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint}"

    def _describe_test_failure(self, exc: Exception) -> str:
        return self._scrub(f"testing bucket {self.bucket!r} at {self.endpoint} failed: {exc}")

    def presigned_get_url(self, key: str, expires: timedelta) -> str:
        """A URL that lets anyone holding it GET the object until it expires (at most 7 days, SigV4's limit).

        The URL carries the access key id and a signature, never the secret key.
        """
        validate_key(key)
        if not timedelta(seconds=1) <= expires <= MAX_PRESIGN_EXPIRY:
            raise ValueError("presigned URL expiry must be between 1 second and 7 days")
        try:
            return self._client.presigned_get_object(self.bucket, key, expires=expires)
        except Exception as exc:
            raise self._error(exc, key, "signing a URL for") from exc

    # -- errors ----------------------------------------------------------------------------------------------

    def _scrub(self, message: str) -> str:
        if len(self._secret) >= 4:
            message = message.replace(self._secret, "***")
        return message

    def _error(self, exc: BaseException, key: str | None, action: str) -> StorageError:
        """Map a minio/urllib3 exception to a StorageError whose message a person can act on."""
        if isinstance(exc, StorageError):
            return exc
        where = f"bucket {self.bucket!r} at {self.endpoint}"
        what = f"{key!r} in {where}" if key else where
        err: StorageError
        if isinstance(exc, S3Error):
            code = exc.code or ""
            if code == "NoSuchKey":
                err = ObjectNotFound(f"no object {key!r} in {where}" if key else f"not found in {where}")
            elif code == "NoSuchBucket":
                err = BucketNotFound(f"bucket {self.bucket!r} does not exist at {self.endpoint}")
            elif code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
                err = PermissionDenied(f"access denied {action} {what} (check the access key's permissions)")
            elif code == "InvalidAccessKeyId":
                err = PermissionDenied(f"the access key is not known to {self.endpoint}")
            elif code == "SignatureDoesNotMatch":
                err = PermissionDenied(f"the secret key does not match the access key ({self.endpoint} "
                                       "rejected the request signature)")
            elif code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
                err = PermissionDenied(f"the credentials for {self.endpoint} have expired or are invalid")
            elif code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "Redirect", "BadRequest"):
                err = WrongRegion(f"{self.endpoint} rejected the request {action} {what}: {exc.message} "
                                  f"(check the region; configured: {self.region or 'auto-detect'})")
            else:
                err = StorageError(f"S3 error {action} {what}: {code}: {exc.message}")
        elif isinstance(exc, ServerError):
            err = StorageUnavailable(f"{self.endpoint} failed with HTTP {exc.status_code} {action} {what}")
        elif isinstance(exc, InvalidResponseError):
            err = StorageError(f"{self.endpoint} did not answer like an S3 service {action} {what} "
                               f"(HTTP {exc._code}, content type {exc._content_type})")
        elif isinstance(exc, urllib3.exceptions.MaxRetryError | urllib3.exceptions.NewConnectionError
                        | urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.SSLError
                        | urllib3.exceptions.NameResolutionError):
            err = StorageUnavailable(f"cannot connect to {self.endpoint}: {_network_reason(exc)}")
        elif isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
            err = StorageUnavailable(f"connection to {self.endpoint} failed {action} {what}: "
                                     f"{_network_reason(exc)}")
        elif isinstance(exc, ValueError):
            err = StorageError(f"invalid request {action} {what}: {exc}")
        else:
            err = StorageError(f"{action} {what} failed: {type(exc).__name__}: {exc}")
        return type(err)(self._scrub(str(err)))


class _PartReader:
    """Packs the chunk feed into parts of exactly ``part_size`` bytes (the last one shorter).

    From the second part on, each part is one ``bytearray`` of ``part_size`` the chunks are copied into as they
    arrive: one copy per byte, no growing, joining or re-slicing, so a part costs its size and no more; the
    buffer of a part already sent is refilled rather than a new one allocated (no allocator churn: peak RSS
    stays the same whatever the object's size). The first part grows as its chunks arrive instead, so a small
    object (a manifest) allocates only what it holds.
    Remembers the exception the feed raised (cancellation, or the source failing) so ``write`` can tell it
    apart from S3 errors and re-raise it unchanged.
    """

    def __init__(self, feed: ChunkFeed, part_size: int) -> None:
        self._feed = feed
        self.part_size = part_size
        self._rest: memoryview | None = None  # what the part before left of its last chunk
        self.error: BaseException | None = None

    def _next_chunk(self) -> memoryview | None:
        if self._rest is not None:
            rest, self._rest = self._rest, None
            return rest
        try:
            chunk = self._feed.next_chunk()
        except BaseException as exc:
            self.error = exc
            raise
        return None if chunk is None else memoryview(chunk)

    def _pieces(self) -> Iterator[memoryview]:
        """The chunks (the last one cut) of the next ``part_size`` bytes; fewer at the end of the feed."""
        room = self.part_size
        while room > 0:
            chunk = self._next_chunk()
            if chunk is None:
                return
            if len(chunk) > room:
                self._rest = chunk[room:]
                chunk = chunk[:room]
            room -= len(chunk)
            yield chunk

    def first_part(self) -> bytearray:
        # Copied piece by piece: a chunk is only valid until the feed is asked for the next (reused buffers).
        part = bytearray()
        for piece in self._pieces():
            part += piece
        return part

    def next_part(self, buffer: bytearray | None = None) -> bytearray | None:
        """The next part (in ``buffer`` when given), or None when the feed is exhausted."""
        part = buffer if buffer is not None and len(buffer) == self.part_size else bytearray(self.part_size)
        filled = 0
        with memoryview(part) as view:
            for piece in self._pieces():
                view[filled:filled + len(piece)] = piece
                filled += len(piece)
        if filled == 0:
            return None
        if filled < self.part_size:
            del part[filled:]
        return part

    def at_end(self) -> bool:
        """True when no byte follows what was returned so far (may take one chunk from the feed)."""
        if self._rest is None:
            self._rest = self._next_chunk()
        return self._rest is None


class _ObjectReader(io.RawIOBase):
    """Streaming reader over minio's HTTP response: maps transport errors, releases the connection."""

    def __init__(self, response: urllib3.BaseHTTPResponse, map_error: Callable[[BaseException], StorageError]
                 ) -> None:
        super().__init__()
        self._response = response
        self._map_error = map_error

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed object stream")
        try:
            return self._response.read(None if size is None or size < 0 else size)
        except Exception as exc:
            raise self._map_error(exc) from exc

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._response.close()
                self._response.release_conn()
            finally:
                super().close()


def _parse_endpoint(endpoint: str) -> tuple[str, str, bool]:
    """``http(s)://host[:port]`` -> (normalised endpoint, host[:port], secure). Anything else is refused."""
    if not endpoint:
        raise StorageError("an S3 storage needs an endpoint such as https://s3.amazonaws.com")
    parts = urllib.parse.urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https"):
        raise StorageError(f"S3 endpoint must start with http:// or https:// (got {endpoint!r})")
    if parts.username is not None or parts.password is not None:
        raise StorageError("S3 endpoint must not contain credentials; use the access/secret key fields")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise StorageError(f"S3 endpoint {endpoint!r} has an invalid port") from None
    if not parts.hostname:
        raise StorageError(f"S3 endpoint {endpoint!r} has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StorageError(f"S3 endpoint {endpoint!r} must not contain a path; the bucket is configured "
                           "separately")
    return f"{parts.scheme}://{parts.netloc}", parts.netloc, parts.scheme == "https"


def _network_reason(exc: BaseException) -> str:
    """The root cause of a urllib3 failure in a few words ("Connection refused", "timed out", a TLS error)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        if isinstance(current, urllib3.exceptions.MaxRetryError) and current.reason is not None:
            current = current.reason
        else:
            current = current.__cause__ or current.__context__
    for item in chain:
        if isinstance(item, urllib3.exceptions.NameResolutionError):
            return "cannot resolve the host name"
        if isinstance(item, urllib3.exceptions.SSLError):
            return f"TLS error: {item}"
    for item in chain:
        if isinstance(item, OSError) and item.strerror:  # ConnectionRefusedError, socket.gaierror, ...
            return item.strerror
    for item in chain:
        # NewConnectionError subclasses ConnectTimeoutError in urllib3 2.x: only a real timeout lands here.
        if isinstance(item, urllib3.exceptions.TimeoutError | TimeoutError):
            return "timed out"
    text = str(chain[-1])
    # urllib3 prefixes "<urllib3.connection.HTTPConnection object at 0x...>: "; drop it.
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return text or type(chain[-1]).__name__
