"""An HTTP server that answers like a Qdrant 1.19 node for everything QBM touches.

Why a double and not mocks: QBM's correctness depends on wire details (202 without a result, errors
that are JSON on most routes but plain text on downloads and auth, Content-Length on downloads,
multipart uploads, checksum sidecars, wait=false work that finishes later). The double reproduces those
over real HTTP with real files, following Qdrant's own source and its openapi.json (tests/fixtures holds the
schemas taken from it), so tests exercise the same code paths production does. It runs werkzeug's threaded server
on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import requests
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.qdrant_double import errors
from tests.qdrant_double.aliases import AliasTable
from tests.qdrant_double.errors import ApiError
from tests.qdrant_double.faults import DownloadPlan, FailureRule, Faults
from tests.qdrant_double.store import Store, default_config, key_shard_ids, sha256_file

if TYPE_CHECKING:
    from tests.qdrant_double.cluster import DoubleCluster

log = logging.getLogger(__name__)

QDRANT_COMMIT = "74f3e85b9473c62560006c043e13737ce6b48412"
PUBLIC_PATHS = ("/", "/healthz", "/livez", "/readyz")
DOWNLOAD_ENDPOINTS = {"download_snapshot", "download_shard_snapshot", "stream_shard_snapshot"}
PAYLOAD_SCHEMA_TYPES = ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")
PRIORITIES = ("no_sync", "snapshot", "replica")
REPLICA_STATES = ("Active", "Dead", "Partial", "Initializing", "Listener", "PartialSnapshot", "Recovery",
                  "Resharding", "ReshardingScaleDown", "ActiveRead", "ManualRecovery")
#: Replica states a read may use (Qdrant's ``readable_peers``).
READABLE_STATES = ("Active", "ActiveRead", "ReshardingScaleDown")
#: Healthy downloads go out in 1 MiB writes (few Python round trips per GiB); a download with a fault plan
#: (throttle, cut, stall, corrupt) uses 64 KiB so the fault lands where the test asked for it.
SEND_CHUNK = 1024 * 1024
FAULT_CHUNK = 64 * 1024
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_STREAM_PATH = re.compile(r"/collections/[^/]+/shards/\d+/snapshot/?")

_URL_MAP = Map([
    Rule("/", endpoint="root", methods=["GET"]),
    Rule("/healthz", endpoint="healthz", methods=["GET"]),
    Rule("/livez", endpoint="healthz", methods=["GET"]),
    Rule("/readyz", endpoint="readyz", methods=["GET"]),
    Rule("/cluster", endpoint="cluster", methods=["GET"]),
    Rule("/collections", endpoint="list_collections", methods=["GET"]),
    Rule("/aliases", endpoint="list_aliases", methods=["GET"]),
    Rule("/collections/aliases", endpoint="update_aliases", methods=["POST"]),
    Rule("/collections/<name>/aliases", endpoint="collection_aliases", methods=["GET"]),
    Rule("/collections/<name>/index", endpoint="create_payload_index", methods=["PUT"]),
    Rule("/collections/<name>", endpoint="get_collection", methods=["GET"]),
    Rule("/collections/<name>", endpoint="create_collection", methods=["PUT"]),
    Rule("/collections/<name>", endpoint="delete_collection", methods=["DELETE"]),
    Rule("/collections/<name>/exists", endpoint="collection_exists", methods=["GET"]),
    Rule("/collections/<name>/cluster", endpoint="collection_cluster", methods=["GET"]),
    Rule("/collections/<name>/points/count", endpoint="count_points", methods=["POST"]),
    Rule("/collections/<name>/shards", endpoint="list_shard_keys", methods=["GET"]),
    Rule("/collections/<name>/shards", endpoint="create_shard_key", methods=["PUT"]),
    Rule("/collections/<name>/snapshots", endpoint="list_snapshots", methods=["GET"]),
    Rule("/collections/<name>/snapshots", endpoint="create_snapshot", methods=["POST"]),
    Rule("/collections/<name>/snapshots/upload", endpoint="upload_snapshot", methods=["POST"]),
    Rule("/collections/<name>/snapshots/recover", endpoint="recover_snapshot", methods=["PUT"]),
    Rule("/collections/<name>/snapshots/<snapshot>", endpoint="download_snapshot", methods=["GET"]),
    Rule("/collections/<name>/snapshots/<snapshot>", endpoint="delete_snapshot", methods=["DELETE"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshot", endpoint="stream_shard_snapshot", methods=["GET"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshots", endpoint="list_shard_snapshots",
         methods=["GET"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshots", endpoint="create_shard_snapshot",
         methods=["POST"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshots/upload", endpoint="upload_shard_snapshot",
         methods=["POST"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshots/recover", endpoint="recover_shard_snapshot",
         methods=["PUT"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshots/<snapshot>", endpoint="download_shard_snapshot",
         methods=["GET"]),
    Rule("/collections/<name>/shards/<int:shard>/snapshots/<snapshot>", endpoint="delete_shard_snapshot",
         methods=["DELETE"]),
], strict_slashes=False)


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without the per-request access log (tests have their own request log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _Request(Request):
    """Spools multipart file fields into ``upload_dir`` (like Qdrant's ``<snapshots>/tmp/upload``)."""

    upload_dir: Path = Path(tempfile.gettempdir())

    def __init__(self, environ: dict, upload_dir: Path) -> None:
        super().__init__(environ)
        self.upload_dir = upload_dir
        self.spooled: list[Path] = []

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        stream = tempfile.NamedTemporaryFile(dir=self.upload_dir, prefix="upload-", delete=False)
        self.spooled.append(Path(stream.name))
        return stream


@dataclass
class Recorded:
    """One request as the double received it: what QBM forwarded, for tests to assert on."""

    method: str
    path: str
    query: dict[str, str]
    #: The headers that matter: ``api-key`` (the key QBM sent, if any) and ``content-type``.
    headers: dict[str, str]
    #: The JSON body, once a handler read it (None for bodiless and multipart requests).
    json: dict[str, Any] | None = None
    #: Multipart uploads: the uploaded file's name.
    filename: str | None = None
    #: When it arrived (``time.monotonic()``).
    at: float = field(default_factory=time.monotonic)


def _json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


class QdrantDouble:
    """A fake Qdrant node. See the package docstring for the public surface."""

    def __init__(self, root: Path, *, api_key: str | None = None, peer_id: int = 1234567890,
                 version: str = "1.19.0") -> None:
        self.root = Path(root)
        self.api_key = api_key
        #: Qdrant's ``service.read_only_api_key``: reads only; anything else answers 403 (set it while running).
        self.read_only_api_key: str | None = None
        self.peer_id = peer_id
        self.version = version
        self.store = Store(self.root, peer_id=peer_id, version=version)
        self.snapshots_path: Path = self.store.snapshots_path
        self.faults = Faults()
        self.requests_seen: list[tuple[str, str]] = []
        #: Every request in full (method, path, query, the headers that matter, JSON body, upload file name).
        self.requests_log: list[Recorded] = []
        self._current = threading.local()
        self.background_errors: list[str] = []
        self.remote_shards: dict[str, list[dict[str, Any]]] = {}
        self.url = ""
        self._cluster: dict[str, Any] | None = None
        #: The DoubleCluster this node is a peer of (set by it): the cluster answers for layout and totals.
        self.cluster: DoubleCluster | None = None
        #: Collection aliases (a DoubleCluster shares one table between its peers).
        self.alias_table = AliasTable()
        #: The address and port served on (kept after stop() so a restart can use them again).
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._tasks: set[threading.Thread] = set()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle ------------------------------------------------------------------------------------

    def start(self, port: int | None = None, *, host: str = "127.0.0.1") -> str:
        """Serve on ``host`` (a loopback address) in a background thread, on ``port`` (default: a free one);
        returns the base URL."""
        if self._server is not None:
            return self.url
        self._stopping.clear()
        self._server = make_server(host, port or 0, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.host, self.port = host, self._server.server_port
        self.url = f"http://{host}:{self.port}"
        # A short poll interval keeps stop() (server.shutdown) fast; tests start and stop many doubles.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="qdrant-double", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving; wakes stalled downloads and waits (bounded) for background snapshot work."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.wait_for_background(timeout=30)

    def __enter__(self) -> QdrantDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def clock(self) -> Callable[[], datetime]:
        """Source of "now" for snapshot names (UTC). Tests may replace it to control names."""
        return self.store.clock

    @clock.setter
    def clock(self, value: Callable[[], datetime]) -> None:
        self.store.clock = value

    # ----- test helpers -------------------------------------------------------------------------------

    def create_collection(self, name: str, *, points: int = 100, size_bytes: int = 64 * 1024,
                          shard_number: int = 1, vector_size: int = 4, replication_factor: int = 1) -> None:
        """Create a collection directly on disk with ``size_bytes`` of data spread over its shards."""
        config = default_config({"size": vector_size, "distance": "Cosine"}, shard_number, replication_factor)
        self.store.create(name, config=config, points=points, size_bytes=size_bytes)

    def drop_collection(self, name: str) -> None:
        self.store.drop(name)
        self.alias_table.drop_collection(name)

    def collection_exists(self, name: str) -> bool:
        return self.store.exists(name)

    def points_count(self, name: str) -> int:
        return self.store.points_count(name)

    def snapshot_files(self, name: str, shard_id: int | None = None) -> list[Path]:
        """Every file in the collection's (or shard's) snapshot directory, sidecars included."""
        directory = self.store.snapshot_dir(name, shard_id)
        return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []

    def set_shard_state(self, name: str, shard_id: int, state: str | None) -> None:
        """Force a local replica state (e.g. "Dead"); None/"Active" restores the default."""
        self.store.set_shard_state(name, shard_id, state)

    def enable_cluster(self, peers: dict[int, str] | None = None, *, leader: int | None = None,
                       term: int = 1, commit: int = 10) -> None:
        """Make ``GET /cluster`` answer as a node of an enabled (distributed) cluster.

        ``peers`` maps peer id to its internal p2p URI; this node is always included.
        """
        all_peers = {self.peer_id: f"http://127.0.0.1:{6335}/"}
        all_peers.update(peers or {})
        with self._lock:
            self._cluster = {"peers": all_peers, "leader": self.peer_id if leader is None else leader,
                             "term": term, "commit": commit}

    def disable_cluster(self) -> None:
        with self._lock:
            self._cluster = None

    def wait_for_background(self, timeout: float = 30.0) -> bool:
        """Wait until wait=false work has finished; True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                tasks = [t for t in self._tasks if t.is_alive()]
            if not tasks:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            tasks[0].join(timeout=remaining)

    # ----- WSGI plumbing --------------------------------------------------------------------------------

    def _wsgi(self, environ: dict, start_response: Callable) -> Iterator[bytes]:
        rate = self.faults.upload_rate()
        if rate and environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").endswith("/upload"):
            environ["wsgi.input"] = _ThrottledInput(environ["wsgi.input"], rate, self._stopping)
        request = _Request(environ, self.snapshots_path / "tmp" / "upload")
        started = time.perf_counter()
        record = Recorded(request.method, request.path, dict(request.args.items()),
                          {k: request.headers[k] for k in ("api-key", "content-type") if k in request.headers})
        self._current.record = record
        with self._lock:
            self.requests_seen.append((request.method, request.path))
            self.requests_log.append(record)
        stall = self.faults.take_stall(request.method, request.path)
        if stall:
            self._stopping.wait(stall)
        endpoint = ""
        try:
            rule = self.faults.take_failure(request.path)
            if rule is not None:
                response = self._injected_failure(rule, started)
            else:
                response = self._auth_failure(request)
                if response is None:
                    adapter = _URL_MAP.bind_to_environ(environ)
                    endpoint, args = adapter.match()
                    if "name" in args and not _valid_collection_name(args["name"]):
                        if endpoint == "create_collection":
                            raise errors.wrong_input(f"Collection name `{args['name']}` is not valid")
                        raise errors.collection_not_found(args["name"])
                    response = getattr(self, "_h_" + endpoint)(request, started=started, **args)
        except ApiError as exc:
            response = self._error_response(exc, started, plain=endpoint in DOWNLOAD_ENDPOINTS)
        except NotFound:
            response = Response(b"", status=404)
        except MethodNotAllowed:
            response = Response(b"", status=405)
        except HTTPException as exc:
            response = Response(exc.description or b"", status=exc.code or 400, mimetype="text/plain")
        except Exception as exc:  # a bug in the double: answer like Qdrant's internal error
            log.exception("qdrant double: unhandled error")
            response = self._error_response(errors.service_error(repr(exc)), started,
                                            plain=endpoint in DOWNLOAD_ENDPOINTS)
        finally:
            request.close()
            for path in request.spooled:
                path.unlink(missing_ok=True)
        return response(environ, start_response)

    def _error_response(self, exc: ApiError, started: float, *, plain: bool) -> Response:
        if plain:
            return Response(exc.message, status=exc.status, mimetype="text/plain")
        elapsed = 0.0 if exc.zero_time else self._elapsed(started)
        return _json_response(exc.status, {"status": {"error": exc.message}, "time": elapsed})

    def _injected_failure(self, rule: FailureRule, started: float) -> Response:
        prefix = {408: "Timeout: ", 429: "Rate limiting exceeded: ", 500: "Service internal error: ",
                  503: "Shard temporarily unavailable: "}.get(rule.status, "Service internal error: ")
        message = f"{prefix}injected fault (test double)"
        if rule.plain_text:
            response = Response(message, status=rule.status, mimetype="text/plain")
        else:
            body = {"status": {"error": message}, "time": self._elapsed(started)}
            response = _json_response(rule.status, body)
        if rule.retry_after is not None or rule.status == 429:
            response.headers["Retry-After"] = f"{rule.retry_after if rule.retry_after is not None else 1:g}"
        return response

    def _auth_failure(self, request: Request) -> Response | None:
        """Qdrant's auth middleware: plain-text 401s, public health paths exempt."""
        key = self.api_key
        path = request.path
        if key is None or path in PUBLIC_PATHS or path.startswith(("/readyz", "/livez")):
            return None
        supplied = request.headers.get("api-key")
        if supplied is None:
            authorization = request.headers.get("Authorization", "")
            if authorization[:7].lower() == "bearer ":
                supplied = authorization[7:].strip()
        if supplied is None:
            return Response("Must provide an API key or an Authorization bearer token", status=401,
                            mimetype="text/plain")
        if hmac.compare_digest(supplied.encode(), key.encode()):
            return None
        read_only = self.read_only_api_key
        if read_only is not None and hmac.compare_digest(supplied.encode(), read_only.encode()):
            streamed = request.method == "GET" and _STREAM_PATH.fullmatch(path) is not None
            if (request.method == "GET" and not streamed) or request.path.endswith("/points/count"):
                return None
            if streamed:  # a download endpoint: its errors are plain text
                return Response("Forbidden: Global manage access is required", status=403, mimetype="text/plain")
            # What Qdrant 1.18 answers a read-only key for a snapshot create, delete, upload or recover.
            return _json_response(403, {"status": {"error": "Forbidden: Global manage access is required"},
                                        "time": 0.0})
        return Response("Invalid API key or JWT", status=401, mimetype="text/plain")

    @staticmethod
    def _elapsed(started: float) -> float:
        return round(time.perf_counter() - started, 6)

    def _ok(self, result: Any, started: float) -> Response:
        return _json_response(200, {"result": result, "status": "ok", "time": self._elapsed(started)})

    def _accepted(self, started: float) -> Response:
        return _json_response(202, {"status": "accepted", "time": self._elapsed(started)})

    def _run(self, work: Callable[[], Any], wait: bool, started: float) -> Response:
        """``wait=true``: do the work and answer its result. ``wait=false``: 202 now, work in background.

        Like Qdrant, failures of background work are not reported to anyone (only recorded in
        ``background_errors`` for test diagnostics).
        """
        if wait:
            return self._ok(work(), started)

        def runner() -> None:
            try:
                work()
            except ApiError as exc:
                with self._lock:
                    self.background_errors.append(exc.message)
            except Exception as exc:  # noqa: BLE001 - recorded, like Qdrant's log line
                log.exception("qdrant double: background task failed")
                with self._lock:
                    self.background_errors.append(repr(exc))
            finally:
                with self._lock:
                    self._tasks.discard(threading.current_thread())

        thread = threading.Thread(target=runner, name="qdrant-double-task", daemon=True)
        with self._lock:
            self._tasks.add(thread)
        thread.start()
        return self._accepted(started)

    # ----- parameter parsing (Qdrant's extractor behaviour) -----------------------------------------------

    @staticmethod
    def _wait(request: Request) -> bool:
        raw = request.args.get("wait")
        if raw is None:
            return True
        if raw in ("true", "false"):
            return raw == "true"
        raise _zero_time(errors.deserialize_error("Query", "wait: provided string was not `true` or `false`"))

    @staticmethod
    def _priority(value: Any, where: str) -> str | None:
        if value is None:
            return None
        if value not in PRIORITIES:
            raise _zero_time(errors.deserialize_error(
                where, f"priority: unknown variant `{value}`, "
                "expected one of `no_sync`, `snapshot`, `replica`"))
        return value

    @staticmethod
    def _checksum(value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise _zero_time(errors.validation_error(
                where, "checksum: invalid SHA256 hash (must be 64 hex characters)"))
        return value

    def _json_body(self, request: Request) -> dict[str, Any]:
        body = self._parse_json(request)
        record = getattr(self._current, "record", None)
        if record is not None:
            record.json = body
        return body

    @staticmethod
    def _parse_json(request: Request) -> dict[str, Any]:
        if request.mimetype != "application/json":
            raise _zero_time(ApiError(400, "Content type error"))
        try:
            body = json.loads(request.get_data(cache=False) or b"null")
        except ValueError as exc:
            raise _zero_time(errors.deserialize_error("Json", str(exc))) from None
        if not isinstance(body, dict):
            raise _zero_time(errors.deserialize_error("Json", "invalid type: expected struct"))
        return body

    def _recover_body(self, request: Request) -> tuple[str, str | None, str | None]:
        body = self._json_body(request)
        location = body.get("location")
        if not isinstance(location, str):
            raise _zero_time(errors.deserialize_error("Json", "missing field `location`"))
        self._priority(body.get("priority"), "Json")
        checksum = self._checksum(body.get("checksum"), "JSON body")
        api_key = body.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            raise _zero_time(errors.deserialize_error("Json", "api_key: invalid type, expected a string"))
        return location, checksum, api_key

    @staticmethod
    def _timeout(request: Request) -> int | None:
        """``?timeout=`` of the cluster routes (Qdrant's ``WaitTimeout``: an integer >= 1; ``wait`` is not one of
        its fields, so it is ignored there, whatever its value)."""
        raw = request.args.get("timeout")
        if raw is None:
            return None
        if not raw.isascii() or not raw.isdigit():
            reason = "cannot parse integer from empty string" if raw == "" else "invalid digit found in string"
            raise _zero_time(ApiError(400, f"Deserialize error in query parameters: {reason}"))
        if int(raw) < 1:
            raise _zero_time(errors.validation_error(
                "query parameters", f"[timeout: value {int(raw)} invalid, must be 1 or larger]"))
        return int(raw)

    def _shard_key_body(self, request: Request) -> dict[str, Any]:
        """A CreateShardingKey body (openapi.json) as ``DoubleCluster.add_shard_key`` arguments; what Qdrant's
        JSON extractor cannot parse is a 400 (``shard_number`` is an alias of ``shards_number`` there)."""
        body = self._json_body(request)
        if "shard_key" not in body:
            raise _zero_time(errors.deserialize_error("Json", "missing field `shard_key`"))
        if not _is_shard_key(body["shard_key"]):
            raise _zero_time(errors.deserialize_error(
                "Json", "shard_key: data did not match any variant of untagged enum ShardKey"))
        number = body.get("shards_number", body.get("shard_number"))
        for field_name, value in (("shards_number", number), ("replication_factor", body.get("replication_factor"))):
            if value is not None and not (type(value) is int and 0 < value < 2 ** 32):
                raise _zero_time(errors.deserialize_error(
                    "Json", f"{field_name}: invalid value: {json.dumps(value)}, expected a nonzero u32"))
        placement = body.get("placement")
        if placement is not None and not (isinstance(placement, list) and all(map(_is_u64, placement))):
            raise _zero_time(errors.deserialize_error("Json", "placement: invalid type, expected a sequence of u64"))
        state = body.get("initial_state")
        if state is not None and state not in REPLICA_STATES:
            raise _zero_time(errors.deserialize_error(
                "Json", f"initial_state: unknown variant `{state}`, expected one of "
                + ", ".join(f"`{s}`" for s in REPLICA_STATES)))
        return {"key": body["shard_key"], "shards_number": number, "replication_factor": body.get(
            "replication_factor"), "placement": placement, "initial_state": state}

    def _upload_params(self, request: Request) -> tuple[bool, str | None]:
        wait = self._wait(request)
        self._priority(request.args.get("priority"), "Query")
        checksum = self._checksum(request.args.get("checksum"), "query params")
        return wait, checksum

    # ----- service / cluster -----------------------------------------------------------------------

    def _h_root(self, request: Request, started: float) -> Response:
        return _json_response(200, {"title": "qdrant - vector search engine", "version": self.version,
                                    "commit": QDRANT_COMMIT})

    def _h_healthz(self, request: Request, started: float) -> Response:
        return Response("healthz check passed", mimetype="text/plain")

    def _h_readyz(self, request: Request, started: float) -> Response:
        return Response("all shards are ready", mimetype="text/plain")

    def _h_cluster(self, request: Request, started: float) -> Response:
        if self.cluster is not None:
            return self._ok(self.cluster.cluster_status(self.peer_id), started)
        with self._lock:
            cluster = self._cluster
        if cluster is None:
            return self._ok({"status": "disabled"}, started)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        leader = cluster["leader"]
        return self._ok({
            "status": "enabled",
            "peer_id": self.peer_id,
            "peers": {str(peer): {"uri": uri} for peer, uri in cluster["peers"].items()},
            "raft_info": {"term": cluster["term"], "commit": cluster["commit"], "pending_operations": 0,
                          "leader": leader, "role": "Leader" if leader == self.peer_id else "Follower",
                          "is_voter": True},
            "consensus_thread_status": {"consensus_thread_status": "working", "last_update": now},
            "message_send_failures": {},
        }, started)

    # ----- collections --------------------------------------------------------------------------------

    def _h_list_collections(self, request: Request, started: float) -> Response:
        return self._ok({"collections": [{"name": n} for n in self.store.names()]}, started)

    def _h_get_collection(self, request: Request, started: float, name: str) -> Response:
        self.store.require(name)
        return self._ok(self.store.collection_info(name, self._total_points(name)), started)

    def _total_points(self, name: str) -> int | None:
        """A cluster peer answers counts for the whole collection (None: this node holds every shard)."""
        return self.cluster.points_count(name) if self.cluster is not None else None

    def _h_count_points(self, request: Request, started: float, name: str) -> Response:
        """``POST /collections/{name}/points/count``: exact only when asked (``exact`` defaults to true in
        Qdrant); a filter is not supported by the double and refused rather than ignored. ``shard_key`` counts
        the selected shards only (exactly)."""
        body = self._json_body(request)
        if body.get("filter") is not None:
            raise ApiError(400, "Bad request: the Qdrant double counts without a filter only")
        exact = body.get("exact", True)
        if not isinstance(exact, bool):
            raise ApiError(400, "Json deserialize error: exact: invalid type, expected a boolean")
        selector = body.get("shard_key")
        if selector is not None and not _is_key_selector(selector):
            raise _zero_time(errors.deserialize_error(
                "Json", "shard_key: data did not match any variant of untagged enum ShardKeySelector"))
        self.store.require(name)
        if selector is not None:
            shards = self._selected_shards(name, selector)
            return self._ok({"count": sum(self._shard_count(name, shard_id) for shard_id in shards)}, started)
        total = self._total_points(name)
        count = self.store.points_count(name) if total is None else total
        return self._ok({"count": count if exact else count + self.store.count_drift.get(name, 0)}, started)

    # ----- custom sharding (shard keys) -----------------------------------------------------------------

    def _key_mapping(self, name: str) -> dict[int, Any]:
        """shard id -> shard key: the cluster's (consensus) layout, or this node's own mapping."""
        return self.cluster.shard_keys(name) if self.cluster is not None else self.store.shard_key_mapping(name)

    def _shard_count(self, name: str, shard_id: int) -> int:
        return self.cluster.shard_points(name, shard_id) if self.cluster is not None else \
            self.store.shard_points(name, shard_id)

    def _readable(self, name: str, shard_id: int) -> bool:
        """Has the shard a replica a read may use (for the fallback of a ShardKeyWithFallback)?"""
        if self.cluster is None:
            return self.store.shard_state(name, shard_id) in READABLE_STATES
        return any(state in READABLE_STATES for state in self.cluster.replicas(name)[shard_id].values())

    def _selected_shards(self, name: str, selector: Any) -> list[int]:
        """The shards a ShardKeySelector selects, as Qdrant's ``ShardHolder::select_shards`` (shard_holder/mod.rs):
        400 ``Shard key … not found`` for a key the collection does not have (every key, without custom
        sharding); a key listed twice is counted twice there too."""
        mapping = self._key_mapping(name)
        if isinstance(selector, list):
            return [shard_id for key in selector for shard_id in key_shard_ids(mapping, key)]
        if isinstance(selector, dict):
            return self._fallback_shards(name, mapping, selector["target"], selector["fallback"])
        return key_shard_ids(mapping, selector)

    def _fallback_shards(self, name: str, mapping: dict[int, Any], target: Any, fallback: Any) -> list[int]:
        """Qdrant's ``route_with_fallback_for_read``: the target key's shards when all are readable, else the
        fallback's; its 503 and 404 (the latter really ends in "exist not found") when neither will do."""
        shown = f"target shard key {errors.shard_key_text(target)} nor fallback shard key " \
                f"{errors.shard_key_text(fallback)}"
        owned = {key: [s for s, k in mapping.items() if type(k) is type(key) and k == key]
                 for key in (target, fallback)}
        if owned[target] and all(self._readable(name, shard_id) for shard_id in owned[target]):
            return owned[target]
        if owned[fallback]:
            return owned[fallback]
        if owned[target]:
            raise ApiError(503, f"Shard temporarily unavailable: Neither {shown} have active replicas")
        raise errors.not_found(f"Neither {shown} exist not found")

    def _h_list_shard_keys(self, request: Request, started: float, name: str) -> Response:
        """``GET /collections/{name}/shards``: ShardKeysResponse, ``shard_keys`` only with custom sharding."""
        self.store.require(name)
        if self.store.config(name)["params"].get("sharding_method") != "custom":
            return self._ok({}, started)
        keys = {json.dumps(key): key for key in self._key_mapping(name).values()}
        return self._ok({"shard_keys": [{"key": key} for key in keys.values()]}, started)

    def _h_create_shard_key(self, request: Request, started: float, name: str) -> Response:
        """``PUT /collections/{name}/shards``: a shard key and its shards on every peer (Qdrant answers ``true``
        once they are Active everywhere); a single node is not distributed, so Qdrant refuses it."""
        arguments = self._shard_key_body(request)
        self._timeout(request)
        if self.cluster is None:
            raise errors.bad_request("Distributed mode disabled")
        self.cluster.add_shard_key(name, arguments.pop("key"), **arguments)
        return self._ok(True, started)

    def _h_collection_exists(self, request: Request, started: float, name: str) -> Response:
        return self._ok({"exists": self.store.exists(name)}, started)

    def _h_create_collection(self, request: Request, started: float, name: str) -> Response:
        body = self._json_body(request) if request.content_length or request.mimetype else {}
        vectors = body.get("vectors") or {}
        # Qdrant's default shard number is the number of peers (1 on a single node); with custom sharding it is the
        # number of shards per key, 1 (toc/create_collection.rs).
        peers = len(self.cluster.peer_ids) if self.cluster and body.get("sharding_method") != "custom" else 1
        shard_number = body.get("shard_number") or peers
        replication_factor = body.get("replication_factor") or 1
        if not isinstance(shard_number, int) or shard_number < 1 or not isinstance(replication_factor, int):
            raise _zero_time(errors.validation_error("JSON body", "shard_number: value must be >= 1"))
        config = default_config(vectors, shard_number, replication_factor,
                                body.get("write_consistency_factor") or 1)
        for ours, theirs in (("hnsw_config", "hnsw_config"), ("optimizer_config", "optimizers_config"),
                             ("wal_config", "wal_config")):
            if isinstance(body.get(theirs), dict):
                config[ours].update(body[theirs])
        if isinstance(body.get("quantization_config"), dict):
            config["quantization_config"] = body["quantization_config"]
        for key in ("on_disk_payload", "sharding_method", "sparse_vectors"):
            if body.get(key) is not None:
                config["params"][key] = body[key]
        if self.cluster is not None:
            self.cluster.create_from_config(name, config)
        else:
            self.store.create(name, config=config)
        return self._ok(True, started)

    def _h_delete_collection(self, request: Request, started: float, name: str) -> Response:
        if self.cluster is not None:
            return self._ok(self.cluster.drop_collection(name), started)
        dropped = self.store.drop(name)
        self.alias_table.drop_collection(name)
        return self._ok(dropped, started)

    # ----- payload indexes and aliases ----------------------------------------------------------------

    def _h_create_payload_index(self, request: Request, started: float, name: str) -> Response:
        wait = self._wait(request)
        body = self._json_body(request)
        field_name = body.get("field_name")
        if not isinstance(field_name, str):
            raise _zero_time(errors.deserialize_error("Json", "missing field `field_name`"))
        schema = body.get("field_schema")
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind not in PAYLOAD_SCHEMA_TYPES:
            raise _zero_time(errors.deserialize_error(
                "Json", "field_schema: data did not match any variant of untagged enum PayloadFieldSchema"))
        self.store.require(name)
        stores = self.cluster.stores() if self.cluster is not None else [self.store]
        for store in stores:
            store.create_payload_index(name, field_name, schema)
        operation = int(time.time() * 1000) % 1_000_000
        return self._ok({"operation_id": operation, "status": "completed" if wait else "acknowledged"}, started)

    def _h_list_aliases(self, request: Request, started: float) -> Response:
        return self._ok(self.alias_table.listing(), started)

    def _h_collection_aliases(self, request: Request, started: float, name: str) -> Response:
        self.store.require(name)
        return self._ok(self.alias_table.listing(name), started)

    def _h_update_aliases(self, request: Request, started: float) -> Response:
        body = self._json_body(request)
        self.alias_table.apply(body.get("actions"), self.store.exists)
        return self._ok(True, started)

    def _h_collection_cluster(self, request: Request, started: float, name: str) -> Response:
        self.store.require(name)
        if self.cluster is not None:
            return self._ok(self.cluster.collection_view(self.peer_id, name), started)
        shard_ids = self.store.shard_ids(name)
        keys = {s: {"shard_key": k} for s, k in self.store.shard_key_mapping(name).items()}
        return self._ok({
            "peer_id": self.peer_id,
            "shard_count": len(shard_ids),
            "local_shards": [{"shard_id": s, **keys.get(s, {}), "points_count": self.store.shard_points(name, s),
                              "state": self.store.shard_state(name, s)} for s in shard_ids],
            "remote_shards": list(self.remote_shards.get(name, [])),
            "shard_transfers": [],
        }, started)

    # ----- collection snapshots (C1-C6) -------------------------------------------------------------------

    def _h_list_snapshots(self, request: Request, started: float, name: str) -> Response:
        self.store.require(name)
        return self._ok(self.store.list_snapshots(self.store.snapshot_dir(name)), started)

    def _h_create_snapshot(self, request: Request, started: float, name: str) -> Response:
        wait = self._wait(request)
        self.store.require(name)
        return self._run(lambda: self.store.create_collection_snapshot(name), wait, started)

    def _h_delete_snapshot(self, request: Request, started: float, name: str, snapshot: str) -> Response:
        wait = self._wait(request)
        self.store.require(name)
        path = self.store.resolve_snapshot(self.store.snapshot_dir(name), snapshot)

        def work() -> bool:
            self.store.delete_snapshot(path)
            return True

        return self._run(work, wait, started)

    def _h_download_snapshot(self, request: Request, started: float, name: str, snapshot: str) -> Response:
        self.store.require(name)
        path = self.store.resolve_snapshot(self.store.snapshot_dir(name), snapshot)
        return self._file_response(request, path)

    def _h_recover_snapshot(self, request: Request, started: float, name: str) -> Response:
        wait = self._wait(request)
        location, checksum, api_key = self._recover_body(request)

        def work() -> bool:
            self._recover_collection_from(name, location, checksum, api_key)
            return True

        return self._run(work, wait, started)

    def _h_upload_snapshot(self, request: Request, started: float, name: str) -> Response:
        wait, checksum = self._upload_params(request)
        upload, filename = self._uploaded_file(request)
        if checksum is not None:
            computed = sha256_file(upload)
            if not _hashes_equal(computed, checksum):
                raise ApiError(400, f"Checksum mismatch: expected {computed}, actual {checksum}")
        # Qdrant keeps the upload in the collection's snapshot dir (no .checksum) and recovers from it.
        target = self.store.snapshot_dir(name) / (Path(filename).name or f"{uuid.uuid4()}.snapshot")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload, target)

        def work() -> bool:
            self._recover_collection(name, target)
            return True

        return self._run(work, wait, started)

    def _recover_collection(self, name: str, archive: Path) -> None:
        """A single node takes the whole archive; a cluster peer only its own shards (the cluster decides)."""
        if self.cluster is not None:
            self.cluster.recover_collection(self.peer_id, name, archive)
        else:
            self.store.recover_collection(name, archive)

    # ----- shard snapshots (S1-S4, S6, S7) -----------------------------------------------------------------

    def _require_shard(self, name: str, shard: int) -> None:
        """The shard exists (404) and this node holds a replica of it (400, as Qdrant)."""
        self.store.require_local_shard(name, shard)

    def _recover_local_shard(self, name: str, shard: int, archive: Path) -> None:
        """Replace this node's replica; in a cluster the other replicas then resync from it."""
        self.store.recover_shard(name, shard, archive)
        if self.cluster is not None:
            self.cluster.replica_recovered(self.peer_id, name, shard)

    def _h_list_shard_snapshots(self, request: Request, started: float, name: str, shard: int) -> Response:
        self._require_shard(name, shard)
        return self._ok(self.store.list_snapshots(self.store.snapshot_dir(name, shard)), started)

    def _h_create_shard_snapshot(self, request: Request, started: float, name: str, shard: int) -> Response:
        wait = self._wait(request)
        return self._run(lambda: self.store.create_shard_snapshot(name, shard), wait, started)

    def _h_delete_shard_snapshot(self, request: Request, started: float, name: str, shard: int,
                                 snapshot: str) -> Response:
        wait = self._wait(request)

        def work() -> bool:
            self._require_shard(name, shard)
            directory = self.store.snapshot_dir(name, shard)
            self.store.delete_snapshot(self.store.resolve_snapshot(directory, snapshot))
            return True

        return self._run(work, wait, started)

    def _h_download_shard_snapshot(self, request: Request, started: float, name: str, shard: int,
                                   snapshot: str) -> Response:
        self._require_shard(name, shard)
        path = self.store.resolve_snapshot(self.store.snapshot_dir(name, shard), snapshot)
        return self._file_response(request, path)

    def _h_stream_shard_snapshot(self, request: Request, started: float, name: str, shard: int) -> Response:
        """Qdrant's streamed shard snapshot: built on the fly, chunked (no Content-Length, no checksum), nothing
        left in snapshots_path. The double builds it in its temp dir and unlinks it once open: nothing stays."""
        snapshot_name, archive = self.store.build_shard_archive(name, shard)
        try:
            fileobj = open(archive, "rb")
        finally:
            archive.unlink(missing_ok=True)  # the open file is read to its end all the same (POSIX)
        plan = self.faults.plan_download()
        body = self._stream(fileobj, plan, request.environ.get("werkzeug.socket"))
        response = Response(body, status=200, mimetype="application/octet-stream", direct_passthrough=True)
        response.call_on_close(fileobj.close)  # also when the body is never read (HEAD)
        response.headers["Content-Disposition"] = f'attachment; filename="{snapshot_name}"'
        return response

    def _h_recover_shard_snapshot(self, request: Request, started: float, name: str, shard: int) -> Response:
        wait = self._wait(request)
        location, checksum, api_key = self._recover_body(request)

        def work() -> bool:
            self._recover_shard_from(name, shard, location, checksum, api_key)
            return True

        return self._run(work, wait, started)

    def _h_upload_shard_snapshot(self, request: Request, started: float, name: str, shard: int) -> Response:
        wait, checksum = self._upload_params(request)
        spooled, _ = self._uploaded_file(request)
        # Qdrant recovers a shard straight from its temp upload file and does not keep it.
        private = self.store.tmp_dir / f"shard-upload-{uuid.uuid4().hex}"
        os.replace(spooled, private)

        def work() -> bool:
            try:
                if checksum is not None:
                    computed = sha256_file(private)
                    if not _hashes_equal(computed, checksum):
                        raise ApiError(400, f"Checksum mismatch: expected {computed}, actual {checksum}")
                self._require_shard(name, shard)
                self._recover_local_shard(name, shard, private)
            finally:
                private.unlink(missing_ok=True)
            return True

        return self._run(work, wait, started)

    # ----- recovery sources -------------------------------------------------------------------------------

    def _uploaded_file(self, request: _Request) -> tuple[Path, str]:
        storage = request.files.get("snapshot")
        if storage is None:
            raise _zero_time(ApiError(400, "Multipart form error: field `snapshot` is missing"))
        path = Path(storage.stream.name)  # our stream factory's NamedTemporaryFile
        storage.stream.close()
        record = getattr(self._current, "record", None)
        if record is not None:
            record.filename = storage.filename
        return path, storage.filename or ""

    def _recover_collection_from(self, name: str, location: str, checksum: str | None,
                                 api_key: str | None) -> None:
        scheme = urlsplit(location).scheme.lower()
        if scheme in ("http", "https"):
            path, digest = self._fetch(location, api_key)
            try:
                _check_checksum(checksum, digest)
                self._recover_collection(name, path)
            finally:
                path.unlink(missing_ok=True)
        elif scheme == "file":
            path = self._local_snapshot_file(location)
            if checksum is not None:
                _check_checksum(checksum, sha256_file(path))
            self._recover_collection(name, path)
        else:
            raise errors.bad_request(f"Unsupported snapshot location `{location}`: "
                                     "expected an http(s):// or file:// URL")

    def _recover_shard_from(self, name: str, shard: int, location: str, checksum: str | None,
                            api_key: str | None) -> None:
        self._require_shard(name, shard)
        scheme = urlsplit(location).scheme.lower()
        if scheme in ("http", "https"):
            path, digest = self._fetch(location, api_key)
            try:
                _check_checksum(checksum, digest)
                self._recover_local_shard(name, shard, path)
            finally:
                path.unlink(missing_ok=True)
        elif scheme == "":
            path = self.store.resolve_snapshot(self.store.snapshot_dir(name, shard), location)
            if checksum is not None:
                _check_checksum(checksum, sha256_file(path))
            self._recover_local_shard(name, shard, path)
        else:
            raise errors.bad_request(f"Invalid shard snapshot location `{location}`: expected an http(s) URL "
                                     "or a snapshot file name")

    def _local_snapshot_file(self, location: str) -> Path:
        """``file://`` recovery is confined to snapshots_path (Qdrant >= 1.17.1)."""
        path = Path(unquote(urlsplit(location).path)).resolve()
        base = self.snapshots_path.resolve()
        if not path.is_relative_to(base):
            raise errors.forbidden(f"Snapshot file `{path}` is outside of the snapshots directory")
        if not path.is_file():
            raise errors.not_found(f"Snapshot file {path.name} not found")
        return path

    def _fetch(self, url: str, api_key: str | None) -> tuple[Path, str]:
        """Stream a remote snapshot into the temp dir, hashing as it arrives (60 s inactivity timeout)."""
        headers = {"api-key": api_key} if api_key else {}
        target = self.store.tmp_dir / f"download-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        received = 0
        try:
            with requests.get(url, headers=headers, stream=True, timeout=(10, 60)) as resp:
                if resp.status_code >= 400:
                    kind = "client" if resp.status_code < 500 else "server"
                    raise errors.service_error(
                        f"Http request error: HTTP status {kind} error ({resp.status_code} {resp.reason}) "
                        f"for url ({url})")
                with open(target, "wb") as out:
                    for chunk in resp.iter_content(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
        except requests.RequestException as exc:
            target.unlink(missing_ok=True)
            raise errors.service_error(f"Http request error: error decoding response body: {exc}") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target, digest.hexdigest()

    # ----- downloads -----------------------------------------------------------------------------------

    def _file_response(self, request: Request, path: Path) -> Response:
        """Serve a snapshot like actix NamedFile: Content-Length, streamed from disk, faults applied."""
        size = path.stat().st_size
        plan = self.faults.plan_download()
        body = self._stream(path, plan, request.environ.get("werkzeug.socket"))
        response = Response(body, status=200, mimetype="application/octet-stream", direct_passthrough=True)
        response.headers["Content-Length"] = str(size)
        response.headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
        return response

    def _stream(self, source: Path | IO[bytes], plan: DownloadPlan, sock: socket.socket | None) -> Iterator[bytes]:
        sent = 0
        stalled = False
        began = time.monotonic()
        # A path is opened here, not in _file_response, so a HEAD request opens nothing.
        fileobj = open(source, "rb") if isinstance(source, Path) else source
        healthy = plan == DownloadPlan()
        try:
            while True:
                want = SEND_CHUNK if healthy else FAULT_CHUNK
                if plan.cut_after is not None:
                    want = min(want, plan.cut_after - sent)
                    if want <= 0:
                        _drop_connection(sock)
                        return
                if plan.stall_seconds is not None and not stalled and sent >= plan.stall_after:
                    stalled = True
                    self._stopping.wait(plan.stall_seconds)
                if plan.stall_seconds is not None and not stalled:
                    want = min(want, plan.stall_after - sent)
                if self._stopping.is_set():  # stopped (a cluster peer killed): in-flight downloads break off
                    _drop_connection(sock)
                    return
                chunk = fileobj.read(want)
                if not chunk:
                    return
                if plan.corrupt:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                yield chunk
                sent += len(chunk)
                if plan.bytes_per_sec:
                    ahead = began + sent / plan.bytes_per_sec - time.monotonic()
                    if ahead > 0 and self._stopping.wait(ahead):
                        _drop_connection(sock)
                        return
        finally:
            fileobj.close()


class _ThrottledInput:
    """A request body read at about ``bytes_per_sec`` (``Faults.throttle_uploads``). It has no ``readinto``, so
    werkzeug's stream wrapper reads through ``read`` in pieces of at most ``FAULT_CHUNK``."""

    def __init__(self, raw: IO[bytes], bytes_per_sec: int, stopping: threading.Event) -> None:
        self._raw, self._rate, self._stopping = raw, bytes_per_sec, stopping
        self._began = time.monotonic()
        self._done = 0

    def read(self, size: int | None = -1) -> bytes:
        want = FAULT_CHUNK if size is None or size < 0 else min(size, FAULT_CHUNK)
        data = self._raw.read(want)
        self._done += len(data)
        ahead = self._began + self._done / self._rate - time.monotonic()
        if ahead > 0:
            self._stopping.wait(ahead)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        return self._raw.readline(size)


def _drop_connection(sock: socket.socket | None) -> None:
    """Close the TCP connection under werkzeug's feet: the client sees fewer bytes than Content-Length."""
    if sock is None:
        raise ConnectionAbortedError("qdrant double: cutting the download")
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _valid_collection_name(name: str) -> bool:
    """Qdrant refuses names that could escape its storage dir; so does the double (it uses them as paths)."""
    return 0 < len(name) <= 255 and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _is_u64(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2 ** 64


def _is_shard_key(value: Any) -> bool:
    """Qdrant's ShardKey: a string or an unsigned 64-bit integer (not a bool, not a float)."""
    return isinstance(value, str) or _is_u64(value)


def _is_key_selector(value: Any) -> bool:
    """Qdrant's ShardKeySelector: a key, a list of keys, or a ShardKeyWithFallback ``{"target", "fallback"}``."""
    if isinstance(value, list):
        return all(map(_is_shard_key, value))
    if isinstance(value, dict):
        return all(_is_shard_key(value.get(field)) for field in ("target", "fallback"))
    return _is_shard_key(value)


def _hashes_equal(a: str, b: str) -> bool:
    """Qdrant compares checksums case-insensitively, ignoring whitespace."""
    return "".join(a.split()).lower() == "".join(b.split()).lower()


def _check_checksum(expected: str | None, actual: str) -> None:
    if expected is not None and not _hashes_equal(expected, actual):
        raise errors.wrong_input(f"Snapshot checksum mismatch: expected {expected}, got {actual}")


def _zero_time(exc: ApiError) -> ApiError:
    """Mark an extractor-level error: Qdrant answers those with ``"time": 0.0``."""
    exc.zero_time = True
    return exc
