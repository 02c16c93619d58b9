"""A small Qdrant REST client: discovery, collection/shard snapshots, recovery. Nothing else.

Why not qdrant-client: QBM moves multi-gigabyte snapshots, and the official client buffers snapshot
downloads and uploads in memory (qdrant-client#323, #324). Here every transfer streams: downloads are an
iterator of bounded chunks, uploads are a multipart body generated from a file object, so memory use does
not grow with snapshot size.

Wire details this client deals with (read from Qdrant's OpenAPI spec and source; the Qdrant double in
``tests/qdrant_double`` behaves the same way):

* Errors come as JSON ``{"status": {"error": "..."}}`` on most routes but as plain text on download routes
  and from the auth layer; both become :class:`QdrantError` with the HTTP status and Qdrant's message.
* ``wait=false`` answers 202 with no ``result``: create calls then return ``None``, delete/recover
  calls ``True`` (accepted).
* Snapshot creation and recovery can take hours, so those calls have no read timeout (a client timeout
  would not cancel the work on the server anyway). Everything else uses the normal read timeout, which
  for a download bounds how long one socket read may stall.
* Only idempotent GETs are retried (connection errors, 502/503/504, with exponential backoff through
  urllib3's ``Retry``). A POST that may have reached Qdrant is never re-sent behind the caller's back:
  retrying a snapshot create could make a second snapshot, and retrying a recovery could run it twice.
  Connection *establishment* failures are retried for every method, since then nothing was sent.
* The API key travels only in the ``api-key`` header. It never appears in messages or ``repr``.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import secrets
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.adapters.urllib3_stream import undecoded_stream

DEFAULT_CHUNK_SIZE = 1024 * 1024
#: Iterating a snapshot download yields chunks this big: per chunk the reader pays a fixed Python cost (urllib3's
#: read, the hand-over to the hashing thread, a write call), so small chunks slow a backup down (figures in
#: bench/RESULTS.md). Storage writes read with ``SnapshotDownload.readinto`` into their own reused buffers instead.
DOWNLOAD_CHUNK_SIZE = 4 * 1024 * 1024
RETRY_STATUSES = frozenset({502, 503, 504})
_MAX_ERROR_BODY = 64 * 1024


class QdrantError(Exception):
    """Qdrant answered with an error, or could not be talked to.

    ``status`` is the HTTP status, or None when there was no (complete) answer; ``message`` is Qdrant's
    own text (e.g. ``Not found: Collection `foo` doesn't exist!``) so callers can show it unchanged.
    """

    def __init__(self, status: int | None, message: str, *, retry_after: float | None = None) -> None:
        self.status = status
        self.message = message
        #: Seconds Qdrant asked us to wait before trying again (its ``Retry-After``, with 429 or 503), if any.
        self.retry_after = retry_after
        super().__init__(f"Qdrant error {status}: {message}" if status is not None else message)

    @property
    def transient(self) -> bool:
        """The one rule for what may succeed if tried again later: no (complete) answer, a timeout (408), a
        rate limit (429) or any 5xx. Every other answer (404, 400, 403, 409, 422...) will not change by
        waiting."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


class QdrantUnavailable(QdrantError):
    """No answer at all: connection refused/reset, DNS, or timeout (after retries for GETs)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class QdrantStreamError(QdrantError):
    """A snapshot download broke off: fewer bytes than Content-Length, a dropped connection, or a stall
    longer than the read timeout. Transient; the download must be restarted from the beginning."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class SnapshotDownload:
    """An open snapshot download: read it with :meth:`readinto` (into the caller's buffer, no allocation per
    chunk: what storage writes use), or iterate it once for ``bytes`` chunks of at most ``chunk_size``.

    ``size`` is the Content-Length (None when Qdrant streams without one, e.g. S3-backed snapshots).
    A body that ends early, or a connection that drops or stalls mid-way, raises
    :class:`QdrantStreamError`, never a silently truncated result. Close it (or use it as a context manager)
    if you stop early, so the connection is released.
    """

    def __init__(self, response: requests.Response, chunk_size: int, what: str) -> None:
        self._response = response
        self._chunk_size = chunk_size
        self._what = what
        self._mode: str | None = None  # "iter" or "readinto": one way of reading per download
        self._raw: http.client.HTTPResponse | None = None  # readinto's source, when it can bypass urllib3
        self.bytes_read = 0
        length = response.headers.get("Content-Length")
        self._encoding = response.headers.get("Content-Encoding", "identity").lower()
        # With a content-coding the decoded length differs from Content-Length; then we cannot check it.
        known = length is not None and length.isdigit() and self._encoding == "identity"
        self.size: int | None = int(length) if known else None

    def _start(self, mode: str) -> None:
        if self._mode is not None and self._mode != mode:
            raise RuntimeError("a SnapshotDownload is read either by iterating or with readinto(), not both")
        if mode == "iter" and self._mode == "iter":
            raise RuntimeError("a SnapshotDownload can be iterated only once")
        if mode == "readinto" and self._mode is None and self._encoding == "identity":
            self._raw = undecoded_stream(self._response)
        self._mode = mode

    def __iter__(self) -> Iterator[bytes]:
        self._start("iter")
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        try:
            for chunk in self._response.iter_content(self._chunk_size):
                if chunk:
                    self.bytes_read += len(chunk)
                    yield chunk
            self._check_complete()
        except (requests.RequestException, OSError, http.client.HTTPException) as exc:
            raise self._broke_off(exc) from exc
        finally:
            self.close()

    def readinto(self, buffer: memoryview | bytearray, /) -> int:
        """Fill ``buffer`` from the body (fully, except at the end); the byte count, 0 once the body is done.

        The bytes go from the socket straight into ``buffer`` through the standard library's
        ``http.client`` response under urllib3 (urllib3's own ``readinto`` reads into a fresh ``bytes`` and
        copies). Only where Qdrant compressed the body (``Content-Encoding``) is urllib3's decoding read used.
        """
        self._start("readinto")
        try:
            if self._raw is not None:
                count = self._raw.readinto(buffer)
            else:
                data = self._response.raw.read(len(buffer), decode_content=True)
                count = len(data)
                buffer[:count] = data
            if count:
                self.bytes_read += count
            else:
                self._check_complete()
                self.close()
            return count
        except (requests.RequestException, OSError, http.client.HTTPException,
                urllib3.exceptions.HTTPError) as exc:
            self.close()
            raise self._broke_off(exc) from exc

    def _check_complete(self) -> None:
        if self.size is not None and self.bytes_read != self.size:
            raise QdrantStreamError(f"download of {self._what} ended after {self.bytes_read} of {self.size} bytes")

    def _broke_off(self, exc: BaseException) -> QdrantStreamError:
        return QdrantStreamError(
            f"download of {self._what} broke off after {self.bytes_read}"
            f"{'' if self.size is None else f' of {self.size}'} bytes: {_short(exc)}")

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> SnapshotDownload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _MultipartBody:
    """``multipart/form-data`` with one file field, generated on the fly from a file object.

    requests' ``files=`` builds the whole body in memory; this reads ``chunk_size`` at a time instead.
    Without a known size requests sends it with chunked transfer encoding.
    """

    def __init__(self, fileobj: BinaryIO, filename: str, size: int | None, chunk_size: int) -> None:
        if any(c in filename for c in '"\\/\r\n\x00') or not filename:
            raise ValueError(f"upload file name {filename!r} must be a plain file name")
        self.boundary = "qbm-" + secrets.token_hex(16)
        self._head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="snapshot"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._fileobj = fileobj
        self._size = size
        self._chunk_size = chunk_size

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def total_length(self) -> int | None:
        return None if self._size is None else len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        while chunk := self._fileobj.read(self._chunk_size):
            sent += len(chunk)
            if self._size is not None and sent > self._size:
                raise ValueError(f"upload source gave more than the announced {self._size} bytes")
            yield bytes(chunk)
        if self._size is not None and sent != self._size:
            raise ValueError(f"upload source gave {sent} bytes, {self._size} were announced")
        yield self._tail


class _SizedMultipartBody(_MultipartBody):
    """Same body with ``__len__``: requests then sends Content-Length instead of chunked encoding."""

    def __len__(self) -> int:
        return self.total_length() or 0


class QdrantClient:
    """Talks to one Qdrant node. Thread-safe for concurrent calls (one pooled requests.Session)."""

    def __init__(self, url: str, api_key: str | None = None, *, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, retries: int = 3, backoff: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        retry = Retry(
            total=retries, connect=retries, read=retries, status=retries, other=0,
            allowed_methods=frozenset({"GET", "HEAD"}),  # read/status retries: idempotent reads only
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff, backoff_max=30.0,
            raise_on_status=False,  # hand the last 5xx back to us, so its message is reported
            respect_retry_after_header=True,
        )
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = "qbm-qdrant-client"
        if self._api_key:
            self._session.headers["api-key"] = self._api_key

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> QdrantClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"QdrantClient({self.url!r}, api_key={'***' if self._api_key else None})"

    # ----- service / cluster -----------------------------------------------------------------------

    def root(self) -> dict[str, Any]:
        """``GET /``: ``{"title", "version", "commit"}`` (not wrapped in Qdrant's result envelope)."""
        body = self._json(self._request("GET", "/"))
        if not isinstance(body, dict):
            raise QdrantError(200, f"unexpected answer to GET /: {str(body)[:200]}")
        return body

    def version(self) -> str | None:
        return self.root().get("version")

    def cluster_status(self) -> dict[str, Any]:
        return self._result(self._request("GET", "/cluster"))

    # ----- collections -------------------------------------------------------------------------------

    def list_collections(self) -> list[str]:
        result = self._result(self._request("GET", "/collections"))
        return [c["name"] for c in result.get("collections", [])]

    def collection_info(self, name: str) -> dict[str, Any]:
        return self._result(self._request("GET", f"/collections/{_q(name)}"))

    def count_points(self, name: str, *, exact: bool = True, shard_key: Any = None) -> int:
        """``POST /collections/{name}/points/count``. Collection info's ``points_count`` is only an estimate
        (segment statistics, deleted points included until optimised): compare backups with this. With
        ``shard_key`` (custom sharding only) only the points of that key's shards are counted."""
        body: dict[str, Any] = {"exact": exact}
        if shard_key is not None:
            body["shard_key"] = shard_key
        result = self._result(self._request("POST", f"/collections/{_q(name)}/points/count", json=body))
        return int(result["count"])

    def collection_cluster_info(self, name: str) -> dict[str, Any]:
        return self._result(self._request("GET", f"/collections/{_q(name)}/cluster"))

    def create_collection(self, name: str, body: dict[str, Any]) -> bool:
        """``PUT /collections/{name}`` with a CreateCollection body (in a cluster: on every peer, by consensus)."""
        return bool(self._result(self._request("PUT", f"/collections/{_q(name)}", json=body, long=True)))

    def create_shard_key(self, name: str, shard_key: Any, *, shards_number: int,
                         replication_factor: int | None = None) -> bool:
        """``PUT /collections/{name}/shards``: the shards of a new shard key (custom sharding), numbered on from
        the collection's highest shard id."""
        body: dict[str, Any] = {"shard_key": shard_key, "shards_number": shards_number}
        if replication_factor is not None:
            body["replication_factor"] = replication_factor
        return bool(self._result(self._request("PUT", f"/collections/{_q(name)}/shards", json=body, long=True)))

    def delete_collection(self, name: str) -> bool:
        return bool(self._result(self._request("DELETE", f"/collections/{_q(name)}", long=True)))

    def create_payload_index(self, name: str, field_name: str, field_schema: Any) -> None:
        """``PUT /collections/{name}/index?wait=true``: ``field_schema`` a type name or a schema object."""
        self._result(self._request("PUT", f"/collections/{_q(name)}/index", params={"wait": "true"},
                                   json={"field_name": field_name, "field_schema": field_schema}, long=True))

    def collection_aliases(self, name: str) -> list[str]:
        """The aliases that point at ``name``."""
        result = self._result(self._request("GET", f"/collections/{_q(name)}/aliases"))
        return [a["alias_name"] for a in result.get("aliases", [])]

    def update_aliases(self, actions: list[dict[str, Any]]) -> bool:
        """``POST /collections/aliases`` with Qdrant's alias actions (create_alias, delete_alias, ...)."""
        return bool(self._result(self._request("POST", "/collections/aliases", json={"actions": actions})))

    # ----- snapshots: of a whole collection (``shard_id`` None) or of one of its shards -----------------

    def list_snapshots(self, collection: str, *, shard_id: int | None = None) -> list[dict[str, Any]]:
        """Snapshot descriptions, unsorted (as Qdrant returns them)."""
        return self._result(self._request("GET", f"{_scope(collection, shard_id)}/snapshots"))

    def create_snapshot(self, collection: str, *, shard_id: int | None = None,
                        wait: bool = True) -> dict[str, Any] | None:
        """The new SnapshotDescription, or None when ``wait=False`` (Qdrant gives no name then)."""
        resp = self._request("POST", f"{_scope(collection, shard_id)}/snapshots",
                             params={"wait": _flag(wait)}, long=True)
        return None if resp.status_code == 202 else self._result(resp)

    def delete_snapshot(self, collection: str, name: str, *, shard_id: int | None = None,
                        wait: bool = True) -> bool:
        """True when deleted (``wait=True``) or accepted (``wait=False``)."""
        resp = self._request("DELETE", f"{_scope(collection, shard_id)}/snapshots/{_q(name)}",
                             params={"wait": _flag(wait)}, long=True)
        return True if resp.status_code == 202 else bool(self._result(resp))

    def download_snapshot(self, collection: str, name: str, *, shard_id: int | None = None,
                          chunk_size: int = DOWNLOAD_CHUNK_SIZE) -> SnapshotDownload:
        what = f"snapshot {name} of {collection}" + (f" shard {shard_id}" if shard_id is not None else "")
        return self._download(f"{_scope(collection, shard_id)}/snapshots/{_q(name)}", chunk_size, what)

    def stream_shard_snapshot(self, collection: str, shard_id: int,
                              chunk_size: int = DOWNLOAD_CHUNK_SIZE) -> SnapshotDownload:
        """``GET /collections/{c}/shards/{id}/snapshot``: the shard archived on the fly into the response, nothing
        kept on the node; no Content-Length and no checksum (hash it while it passes). The shard must be local to
        this node."""
        what = f"streamed snapshot of {collection} shard {shard_id}"
        return self._download(f"{_scope(collection, shard_id)}/snapshot", chunk_size, what)

    # ----- recovery ------------------------------------------------------------------------------------

    def recover_from_url(self, collection: str, location: str, *, shard_id: int | None = None,
                         priority: str | None = None, checksum: str | None = None, api_key: str | None = None,
                         wait: bool = True) -> bool:
        """Make Qdrant fetch ``location`` and restore the collection (or shard) from it: http(s)://, or
        file:// inside its snapshots dir (a bare file name in the shard's snapshot dir for a shard).

        ``api_key`` is sent by Qdrant to ``location`` (for pulling from another node). True when done
        (``wait=True``) or accepted (``wait=False``; failures are then invisible, poll cluster info).
        """
        body = _recover_body(location, priority, checksum, api_key)
        resp = self._request("PUT", f"{_scope(collection, shard_id)}/snapshots/recover",
                             params={"wait": _flag(wait)}, json=body, long=True,
                             redact=_secrets_of(location, api_key))
        return True if resp.status_code == 202 else bool(self._result(resp))

    def upload_and_recover(self, collection: str, fileobj: BinaryIO, *, shard_id: int | None = None,
                           filename: str = "upload.snapshot", size: int | None = None,
                           priority: str | None = None, checksum: str | None = None, wait: bool = True) -> bool:
        """Stream ``fileobj`` to Qdrant as a multipart upload and recover the collection (or shard) from it.

        Pass ``size`` (bytes ``fileobj`` will yield) to send a Content-Length; otherwise the body is
        chunked. Qdrant keeps the uploaded file as ``<snapshots>/<collection>/<filename>``.
        """
        return self._upload(f"{_scope(collection, shard_id)}/snapshots/upload", fileobj, filename, size,
                            priority, checksum, wait)

    # ----- plumbing --------------------------------------------------------------------------------------

    def _upload(self, path: str, fileobj: BinaryIO, filename: str, size: int | None, priority: str | None,
                checksum: str | None, wait: bool) -> bool:
        body: _MultipartBody = (_MultipartBody if size is None else _SizedMultipartBody)(
            fileobj, filename, size, DEFAULT_CHUNK_SIZE)
        params = {"wait": _flag(wait)}
        if priority is not None:
            params["priority"] = priority
        if checksum is not None:
            params["checksum"] = checksum
        resp = self._request("POST", path, params=params, data=body, long=True,
                             headers={"Content-Type": body.content_type})
        return True if resp.status_code == 202 else bool(self._result(resp))

    def _download(self, path: str, chunk_size: int, what: str) -> SnapshotDownload:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        # identity: a snapshot is sent as stored (Content-Length checkable, no compressing of gigabytes on the node)
        resp = self._request("GET", path, stream=True, headers={"Accept-Encoding": "identity"})
        return SnapshotDownload(resp, chunk_size, what)

    def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                 json: Any = None, data: Iterable[bytes] | None = None, headers: dict[str, str] | None = None,
                 long: bool = False, stream: bool = False, redact: tuple[str, ...] = ()) -> requests.Response:
        timeout = (self.connect_timeout, None if long else self.read_timeout)
        try:
            # Always streamed at first, so an error body is read with a size cap (a proxy's HTML page
            # or a misbehaving node cannot make us buffer much); small JSON answers are read right after.
            # No redirects: requests would re-send our custom ``api-key`` header to wherever a redirect
            # points (it only strips ``Authorization``), and Qdrant itself never redirects.
            resp = self._session.request(method, self.url + path, params=params, json=json, data=data,
                                         headers=headers, timeout=timeout, stream=True, allow_redirects=False)
            if resp.status_code >= 300:
                try:
                    raise QdrantError(resp.status_code, self._redact(_error_message(resp), redact),
                                      retry_after=_retry_after(resp))
                finally:
                    resp.close()
            if not stream:
                resp.content  # noqa: B018 - read the (small) body now and give the connection back
        except requests.RequestException as exc:
            message = f"cannot reach Qdrant at {self.url} ({method} {path}): {_short(exc)}"
            raise QdrantUnavailable(self._redact(message, redact)) from None
        return resp

    def _redact(self, message: str, extra: tuple[str, ...]) -> str:
        for secret in (self._api_key, *extra):
            if secret and secret in message:
                message = message.replace(secret, "***")
        return message

    @staticmethod
    def _json(resp: requests.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise QdrantError(resp.status_code, f"unexpected non-JSON answer: {resp.text[:200]!r}") from None

    def _result(self, resp: requests.Response) -> Any:
        body = self._json(resp)
        if not isinstance(body, dict) or "result" not in body:
            raise QdrantError(resp.status_code, f"answer without a result: {str(body)[:200]}")
        return body["result"]


def _error_message(resp: requests.Response) -> str:
    """Qdrant's error text: ``status.error`` from JSON, else the (plain-text) body, else the reason."""
    try:
        raw = resp.raw.read(_MAX_ERROR_BODY, decode_content=True)
    except Exception:  # noqa: BLE001 - the body is best effort; the status already says what happened
        raw = b""
    text = raw.decode(resp.encoding or "utf-8", errors="replace").strip()
    try:
        body = jsonlib.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict) and isinstance(status.get("error"), str):
            return status["error"]
        if isinstance(status, str):
            return status  # e.g. "already_in_progress"
    if 300 <= resp.status_code < 400:
        return f"unexpected redirect ({resp.status_code}) to {resp.headers.get('Location', '?')}"
    return text or resp.reason or f"HTTP {resp.status_code}"


def _retry_after(resp: requests.Response) -> float | None:
    """``Retry-After`` in seconds (Qdrant sends a number; an HTTP date from a proxy is not used)."""
    value = resp.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def _recover_body(location: str, priority: str | None, checksum: str | None,
                  api_key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"location": location}
    if priority is not None:
        body["priority"] = priority
    if checksum is not None:
        body["checksum"] = checksum
    if api_key is not None:
        body["api_key"] = api_key
    return body


def _secrets_of(location: str, api_key: str | None) -> tuple[str, ...]:
    """Values Qdrant might echo back that must not reach logs: the key and a presigned URL's query."""
    query = urlsplit(location).query
    return tuple(s for s in (api_key, query) if s)


def _q(segment: str) -> str:
    return quote(str(segment), safe="")


def _scope(collection: str, shard_id: int | None) -> str:
    """The path of a collection, or of one of its shards."""
    base = f"/collections/{_q(collection)}"
    return base if shard_id is None else f"{base}/shards/{int(shard_id)}"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
