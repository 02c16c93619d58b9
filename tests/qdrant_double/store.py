"""The double's on-disk state: collection data directories and real snapshot archives, laid out as Qdrant's.

Everything QBM cares about is real here: a collection is a directory of files whose size the test chooses,
snapshots are uncompressed GNU tar files with Qdrant's layout, built in a temp dir and renamed into
``<snapshots_path>/<collection>/`` *before* their ``.checksum`` sidecar is written (the order real Qdrant
uses, so a listing can briefly show a snapshot without its checksum), and recovery unpacks and validates an
archive before it replaces anything, so points_count and size after a restore come from the snapshot itself.

A collection directory, and a collection snapshot (Qdrant v1.18/1.19's layout; tests/qdrant_double/README.md
lists what differs from the real one)::

    config.json                     the CollectionConfig
    version.info                    the collection *format* version (``0.4.2``), not Qdrant's version
    payload_index.json              {field: schema} of the payload indexes
    shard_key_mapping.json          (collections with custom sharding only) Qdrant's list of
                                    {"key": <shard key>, "shard_ids": [...]}; their shards are the ones it lists
    <shard_id>/replica_state.json   {"is_local": true, "this_peer_id": P, "peers": {P: "Active"}}
                                    (a peer of a DoubleCluster: every peer holding a replica, and a shard
                                    held only by other peers has just this file and shard_config.json)
    <shard_id>/shard_config.json    {"type": "ReplicaSet"}
    <shard_id>/newest_clocks.json, oldest_clocks.json
    <shard_id>/wal/                 the shard's WAL (a snapshot of one shard has an empty one)
    <shard_id>/applied_seq.json     (collection snapshots, with the WAL)
    <shard_id>/segments/<uuid>/     on disk: segment.json and files/data.bin, the bulk bytes (pseudo-random)
    <shard_id>/segments/<uuid>.tar  in a snapshot: a nested tar of snapshot/files/data.bin, segment.json,
                                    version.info

Each segment's ``segment.json`` carries the double's own bookkeeping (points, data size and sha256). Recovery
refuses (400, the collection untouched) an archive it cannot unpack or whose structure is broken, but like real
Qdrant it does not notice damaged segment bytes: only the ``checksum`` sent with a recovery catches those.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import struct
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.qdrant_double import errors

BLOCK = 1 << 20
#: What a collection snapshot's version.info holds: the collection format version, the same for every 1.x node.
FORMAT_VERSION = "0.4.2"
SEGMENT_DATA = Path("files") / "data.bin"


def default_config(vectors: dict[str, Any], shard_number: int, replication_factor: int = 1,
                   write_consistency_factor: int = 1) -> dict[str, Any]:
    """A CollectionConfig with Qdrant 1.19's defaults (what GET /collections/{c} shows for a fresh one)."""
    return {
        "params": {
            "vectors": vectors,
            "shard_number": shard_number,
            "replication_factor": replication_factor,
            "write_consistency_factor": write_consistency_factor,
            "on_disk_payload": True,
        },
        "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                        "max_indexing_threads": 0, "on_disk": False},
        "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                             "default_segment_number": 0, "max_segment_size": None,
                             "memmap_threshold": None, "indexing_threshold": 10000,
                             "flush_interval_sec": 5, "max_optimization_threads": None},
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1},
        "quantization_config": None,
        "strict_mode_config": {"enabled": False},
    }


def is_custom(config: dict[str, Any]) -> bool:
    """Custom sharding (shard keys): the collection's shards are those of its keys, not 0..shard_number-1."""
    return config["params"].get("sharding_method") == "custom"


def initial_shard_ids(config: dict[str, Any]) -> list[int]:
    """The shards a new collection starts with: none with custom sharding (Qdrant creates them per shard key,
    ``shard_number`` being the default number per key), else 0..shard_number-1."""
    return [] if is_custom(config) else list(range(int(config["params"]["shard_number"])))


def read_key_mapping(path: Path) -> dict[int, Any]:
    """shard id -> shard key from a shard_key_mapping.json (Qdrant's format: a list of {"key", "shard_ids"}); a
    missing file is an empty mapping."""
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text())
    return {int(shard_id): entry["key"] for entry in entries for shard_id in entry["shard_ids"]}


def write_key_mapping(path: Path, mapping: dict[int, Any]) -> None:
    """Write ``mapping`` (shard id -> key) as Qdrant does (shard_mapping.rs, ``SerdeHelper``); replaced, never
    rewritten in place, since the peers of a DoubleCluster may share the old file as a hard link."""
    groups: dict[str, dict[str, Any]] = {}
    for shard_id, key in sorted(mapping.items()):
        groups.setdefault(json.dumps(key), {"key": key, "shard_ids": []})["shard_ids"].append(shard_id)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(list(groups.values())))
    os.replace(tmp, path)


def key_shard_ids(mapping: dict[int, Any], key: Any) -> list[int]:
    """The shard ids of shard key ``key`` in ``mapping`` (shard id -> key); Qdrant's 400 when it has none
    (``ShardHolder::get_shard_ids_by_key``: ``Shard key {key} not found``)."""
    ids = sorted(shard_id for shard_id, k in mapping.items() if type(k) is type(key) and k == key)
    if not ids:
        raise errors.bad_request(f"Shard key {errors.shard_key_text(key)} not found")
    return ids


def _tree_shard_ids(tree: Path, config: dict[str, Any]) -> list[int]:
    """The shards a collection directory (or an unpacked collection snapshot) has, by its config and mapping."""
    if is_custom(config):
        return sorted(read_key_mapping(tree / "shard_key_mapping.json"))
    return list(range(int(config["params"]["shard_number"])))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_data(path: Path, size: int, seed: bytes, counter_base: int) -> str:
    """Write ``size`` pseudo-random bytes fast: one random 1 MiB block, its first 8 bytes XOR a counter.

    Every block differs and nothing is zeros, yet a 2 GiB collection costs only disk time. Returns the
    sha256 of what was written (computed on the way, not by re-reading).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    buf = bytearray(seed)
    view = memoryview(buf)
    base = int.from_bytes(seed[:8], "little")
    remaining = size
    index = counter_base
    with open(path, "wb") as f:
        while remaining > 0:
            struct.pack_into("<Q", buf, 0, base ^ index)
            piece = view[: min(remaining, len(buf))]
            f.write(piece)
            digest.update(piece)
            remaining -= len(piece)
            index += 1
    return digest.hexdigest()


def _split(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal non-negative integers (first ones get the remainder)."""
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.strip().split("."))
    except ValueError as exc:
        raise errors.wrong_input(f"Snapshot has an unreadable version.info: {version!r}") from exc


class Store:
    """Collections and snapshots under one root. Thread-safe: one lock per collection."""

    def __init__(self, root: Path, *, peer_id: int, version: str,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.root = root
        self.peer_id = peer_id
        self.version = version
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.collections_dir = root / "storage" / "collections"
        self.tmp_dir = root / "storage" / "tmp"
        self.snapshots_path = root / "snapshots"
        for d in (self.collections_dir, self.tmp_dir, self.snapshots_path):
            d.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        # Replica states that differ from "Active" (e.g. ManualRecovery while a recovery runs).
        self._states: dict[tuple[str, int], str] = {}
        #: Real Qdrant renames a snapshot into place *before* it writes the ``.checksum`` sidecar, so a listing
        #: can show a snapshot without a checksum; clear this event to hold every new snapshot in that window.
        self.checksum_written = threading.Event()
        self.checksum_written.set()
        #: Qdrant's SnapshotDescription.creation_time is nullable: set this to list every snapshot without one.
        self.null_creation_time = False
        #: How far collection info's ``points_count`` is off per collection: real Qdrant's is approximate (it
        #: counts segments, deleted points included until optimised); only an exact count request is exact.
        self.count_drift: dict[str, int] = {}

    # ----- locking / paths -------------------------------------------------------------------------

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(name, threading.RLock())
        with lock:
            yield

    def collection_dir(self, name: str) -> Path:
        return self.collections_dir / name

    def snapshot_dir(self, name: str, shard_id: int | None = None) -> Path:
        base = self.snapshots_path / name
        return base if shard_id is None else base / "shards" / str(shard_id)

    def _tmp_path(self, prefix: str) -> Path:
        return self.tmp_dir / f"{prefix}-{uuid.uuid4().hex}"

    # ----- collections -------------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return (self.collection_dir(name) / "config.json").is_file()

    def require(self, name: str) -> None:
        if not self.exists(name):
            raise errors.collection_not_found(name)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.collections_dir.iterdir() if (p / "config.json").is_file())

    def create(self, name: str, *, config: dict[str, Any], points: int = 0, size_bytes: int = 0) -> None:
        """Create a collection directory with ``points`` points and ``size_bytes`` of data over its shards."""
        with self.locked(name):
            if self.exists(name):
                raise errors.wrong_input(f"Collection `{name}` already exists!")
            staging = self.build_tree(f"create-{name}", config=config, points=points, size_bytes=size_bytes)
            try:
                self._move_into_place(name, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def build_tree(self, prefix: str, *, config: dict[str, Any], points: int, size_bytes: int) -> Path:
        """A complete collection directory (every shard with data) in the temp dir; the caller moves or removes
        it."""
        staging = self.build_shards(prefix, initial_shard_ids(config), points=points, size_bytes=size_bytes)
        try:
            (staging / "payload_index.json").write_text("{}")
            (staging / "version.info").write_text(FORMAT_VERSION)
            (staging / "config.json").write_text(json.dumps(config))
            if is_custom(config):
                write_key_mapping(staging / "shard_key_mapping.json", {})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def build_shards(self, prefix: str, shard_ids: list[int], *, points: int, size_bytes: int) -> Path:
        """A temp dir holding one complete shard directory per id, ``points`` and ``size_bytes`` split over them;
        the caller moves or removes it."""
        staging = self._tmp_path(prefix)
        staging.mkdir(parents=True)
        try:
            seed = os.urandom(BLOCK)
            counts, sizes = _split(points, len(shard_ids) or 1), _split(size_bytes, len(shard_ids) or 1)
            for index, shard_id in enumerate(shard_ids):
                self._write_shard(staging / str(shard_id), counts[index], sizes[index], seed, shard_id << 40)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def add_shards(self, name: str, tree: Path, *, replicas: dict[int, dict[int, str]], key: Any) -> None:
        """New shards of shard key ``key`` on this peer of a cluster, from ``tree`` (``build_shards``, left in
        place): data where this peer holds a replica, the remote stub elsewhere; the mapping gets them."""
        with self.locked(name):
            self.require(name)
            collection = self.collection_dir(name)
            for shard_id, peers in replicas.items():
                staging = self._tmp_path(f"key-{name}-{shard_id}")
                try:
                    if self.peer_id in peers:
                        shutil.copytree(tree / str(shard_id), staging, copy_function=_link_or_copy)
                    else:
                        staging.mkdir(parents=True)
                        (staging / "shard_config.json").write_text(json.dumps({"type": "ReplicaSet"}))
                    self._write_replica_state(staging, peers)
                    self._swap_in(staging, collection / str(shard_id))
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            mapping = self.shard_key_mapping(name)
            mapping.update(dict.fromkeys(replicas, key))
            write_key_mapping(collection / "shard_key_mapping.json", mapping)

    def _move_into_place(self, name: str, staging: Path) -> None:
        target = self.collection_dir(name)
        if target.exists():  # leftovers of a half-deleted collection
            shutil.rmtree(target)
        os.replace(staging, target)
        # Real Qdrant creates the collection's snapshot directory with the collection.
        self.snapshot_dir(name).mkdir(parents=True, exist_ok=True)

    def install(self, name: str, tree: Path, *, replicas: dict[int, dict[int, str]]) -> None:
        """Create collection ``name`` as one peer of a cluster from a complete collection directory ``tree``
        (left in place): the shards this peer holds a replica of (``replicas``: shard id -> {peer id: state})
        keep their data, the others become what real Qdrant keeps for a remote shard (replica_state.json and
        shard_config.json only)."""
        with self.locked(name):
            if self.exists(name):
                raise errors.wrong_input(f"Collection `{name}` already exists!")
            staging = self._tmp_path(f"install-{name}")
            try:
                # Hard links: every file here is replaced, never rewritten in place, so peers may share them.
                shutil.copytree(tree, staging, copy_function=_link_or_copy)
                for shard_id, peers in replicas.items():
                    shard_dir = staging / str(shard_id)
                    if self.peer_id not in peers:
                        shutil.rmtree(shard_dir)
                        shard_dir.mkdir()
                        (shard_dir / "shard_config.json").write_text(json.dumps({"type": "ReplicaSet"}))
                    self._write_replica_state(shard_dir, peers)
                self._move_into_place(name, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _write_replica_state(self, shard_dir: Path, peers: dict[int, str]) -> None:
        target = shard_dir / "replica_state.json"
        target.unlink(missing_ok=True)  # it may be a hard link shared with another peer
        target.write_text(json.dumps(
            {"is_local": self.peer_id in peers, "this_peer_id": self.peer_id,
             "peers": {str(peer): state for peer, state in peers.items()}}))

    def install_shard(self, name: str, shard_id: int, source: Store, peers: dict[int, str]) -> None:
        """Make this peer's replica of ``shard_id`` a copy of ``source``'s (a resync or a transfer)."""
        staging = self._tmp_path(f"replica-{name}-{shard_id}")
        try:
            with source.locked(name):
                source.require_local_shard(name, shard_id)
                shutil.copytree(source.collection_dir(name) / str(shard_id), staging)
            self._write_replica_state(staging, peers)
            with self.locked(name):
                self.require(name)
                self._swap_in(staging, self.collection_dir(name) / str(shard_id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove_shard_data(self, name: str, shard_id: int, peers: dict[int, str]) -> None:
        """This peer no longer holds a replica of ``shard_id`` (it moved away): keep only the remote stub."""
        staging = self._tmp_path(f"stub-{name}-{shard_id}")
        staging.mkdir(parents=True)
        try:
            (staging / "shard_config.json").write_text(json.dumps({"type": "ReplicaSet"}))
            self._write_replica_state(staging, peers)
            with self.locked(name):
                self.require(name)
                self._swap_in(staging, self.collection_dir(name) / str(shard_id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_shard(self, shard_dir: Path, points: int, size: int, seed: bytes, counter_base: int) -> None:
        segment = shard_dir / "segments" / str(uuid.uuid4())
        data_sha = _write_data(segment / SEGMENT_DATA, size, seed, counter_base)
        (segment / "segment.json").write_text(json.dumps({
            "version": 1, "config": {"vector_data": {}, "payload_storage_type": {"type": "mmap"}},
            "double": {"points_count": points, "data_size": size, "data_sha256": data_sha}}))
        (shard_dir / "shard_config.json").write_text(json.dumps({"type": "ReplicaSet"}))
        (shard_dir / "replica_state.json").write_text(json.dumps(
            {"is_local": True, "this_peer_id": self.peer_id, "peers": {str(self.peer_id): "Active"}}))
        for name in ("newest_clocks.json", "oldest_clocks.json"):
            (shard_dir / name).write_text('{"clocks":[]}')
        wal = shard_dir / "wal"
        wal.mkdir()
        (wal / "first-index").write_text("1")
        (wal / "open-1").write_bytes(os.urandom(4096))  # a real WAL segment is preallocated binary data

    def drop(self, name: str) -> bool:
        """Delete the collection's data. Its snapshots stay (Qdrant keeps them as possible backups)."""
        with self.locked(name):
            target = self.collection_dir(name)
            if not self.exists(name):
                return False
            trash = self._tmp_path(f"drop-{name}")
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
            with self._guard:
                for key in [k for k in self._states if k[0] == name]:
                    del self._states[key]
            return True

    def config(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.collection_dir(name) / "config.json").read_text())
        except FileNotFoundError:
            raise errors.collection_not_found(name) from None

    def shard_ids(self, name: str) -> list[int]:
        return _tree_shard_ids(self.collection_dir(name), self.config(name))

    def shard_key_mapping(self, name: str) -> dict[int, Any]:
        """shard id -> shard key (empty unless the collection has custom sharding and keys)."""
        self.require(name)
        return read_key_mapping(self.collection_dir(name) / "shard_key_mapping.json")

    def shard_exists(self, name: str, shard_id: int) -> bool:
        return (self.collection_dir(name) / str(shard_id) / "shard_config.json").is_file()

    def is_local_shard(self, name: str, shard_id: int) -> bool:
        """Does this node hold a replica of the shard (always, on a single node)?"""
        return (self.collection_dir(name) / str(shard_id) / "segments").is_dir()

    def require_local_shard(self, name: str, shard_id: int) -> None:
        """404 for a shard the collection does not have, 400 for one only other peers hold (Qdrant's words)."""
        self.require(name)
        if not self.shard_exists(name, shard_id):
            raise errors.shard_not_found(shard_id)
        if not self.is_local_shard(name, shard_id):
            raise errors.bad_request(f"Shard {shard_id} is not a local or queue proxy shard")

    def payload_indexes(self, name: str) -> dict[str, Any]:
        """{field: schema as given to ``PUT /collections/{c}/index``}, from payload_index.json."""
        try:
            return dict(json.loads((self.collection_dir(name) / "payload_index.json").read_text()))
        except FileNotFoundError:
            raise errors.collection_not_found(name) from None

    def create_payload_index(self, name: str, field_name: str, schema: Any) -> None:
        with self.locked(name):
            indexes = self.payload_indexes(name)
            indexes[field_name] = schema
            self.set_payload_indexes(name, indexes)

    def set_payload_indexes(self, name: str, indexes: dict[str, Any]) -> None:
        with self.locked(name):
            self.require(name)
            target = self.collection_dir(name) / "payload_index.json"
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(indexes))
            os.replace(tmp, target)  # replaced, never rewritten in place: peers may share the old file

    def shard_points(self, name: str, shard_id: int) -> int:
        return _shard_points(self.collection_dir(name) / str(shard_id))

    def points_count(self, name: str) -> int:
        self.require(name)
        return sum(self.shard_points(name, s) for s in self.shard_ids(name))

    def shard_state(self, name: str, shard_id: int) -> str:
        with self._guard:
            return self._states.get((name, shard_id), "Active")

    def set_shard_state(self, name: str, shard_id: int, state: str | None) -> None:
        with self._guard:
            if state is None or state == "Active":
                self._states.pop((name, shard_id), None)
            else:
                self._states[(name, shard_id)] = state

    def collection_info(self, name: str, exact_points: int | None = None) -> dict[str, Any]:
        """Collection info; ``exact_points`` is the collection's total when this node does not hold every shard
        (a cluster peer answers for the whole collection)."""
        config = self.config(name)
        exact = self.points_count(name) if exact_points is None else exact_points
        points = exact + self.count_drift.get(name, 0)
        threshold = config["optimizer_config"].get("indexing_threshold") or 10000
        return {
            "status": "green",
            "optimizer_status": "ok",
            "warnings": [],
            "indexed_vectors_count": points if points >= threshold else 0,
            "points_count": points,
            "segments_count": len(self.shard_ids(name)),
            "config": copy.deepcopy(config),
            "payload_schema": {field: _payload_index_info(schema, exact)
                               for field, schema in self.payload_indexes(name).items()},
            "update_queue": {"length": 0},
        }

    # ----- snapshots: list / describe / resolve ----------------------------------------------------------

    def describe(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        created = datetime.fromtimestamp(int(stat.st_mtime), UTC).replace(tzinfo=None)
        description: dict[str, Any] = {
            "name": path.name,
            "creation_time": None if self.null_creation_time else created.isoformat(timespec="seconds"),
            "size": stat.st_size,
        }
        checksum_path = path.with_name(path.name + ".checksum")
        if checksum_path.is_file():
            description["checksum"] = checksum_path.read_text().strip()
        return description

    def list_snapshots(self, directory: Path) -> list[dict[str, Any]]:
        """Descriptions of ``*.snapshot`` files, in directory order (Qdrant does not sort them)."""
        if not directory.is_dir():
            return []
        found = []
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file() and entry.name.endswith(".snapshot"):
                    try:
                        found.append(self.describe(Path(entry.path)))
                    except FileNotFoundError:  # deleted while listing
                        continue
        return found

    def resolve_snapshot(self, directory: Path, snapshot_name: str) -> Path:
        """The file for ``snapshot_name`` inside ``directory``; anything escaping it counts as missing."""
        try:
            base = directory.resolve(strict=True)
            path = (base / snapshot_name).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, OSError):
            raise errors.snapshot_not_found(snapshot_name) from None
        if not path.is_relative_to(base) or not path.is_file():
            raise errors.snapshot_not_found(snapshot_name)
        return path

    def delete_snapshot(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            raise errors.snapshot_not_found(path.name) from None
        path.with_name(path.name + ".checksum").unlink(missing_ok=True)

    # ----- snapshots: create ------------------------------------------------------------------------------

    def _timestamp(self) -> str:
        return self.clock().astimezone(UTC).strftime("%Y-%m-%d-%H-%M-%S")

    def create_collection_snapshot(self, name: str) -> dict[str, Any]:
        with self.locked(name):
            self.require(name)
            snapshot_name = f"{name}-{self.peer_id}-{self._timestamp()}.snapshot"
            archive = self._tmp_path(f"snapshot-{name}")
            self._build_snapshot(self.collection_dir(name), archive, with_wal=True)
        return self._store_file(archive, self.snapshot_dir(name) / snapshot_name)

    def create_shard_snapshot(self, name: str, shard_id: int) -> dict[str, Any]:
        snapshot_name, archive = self.build_shard_archive(name, shard_id)
        return self._store_file(archive, self.snapshot_dir(name, shard_id) / snapshot_name)

    def build_shard_archive(self, name: str, shard_id: int) -> tuple[str, Path]:
        """A shard snapshot of a local shard built in the temp dir (outside snapshots_path): (its Qdrant name,
        its path). The caller moves or removes it."""
        with self.locked(name):
            self.require_local_shard(name, shard_id)
            snapshot_name = f"{name}-shard-{shard_id}-{self._timestamp()}.snapshot"
            archive = self._tmp_path(f"snapshot-{name}-{shard_id}")
            self._build_snapshot(self.collection_dir(name) / str(shard_id), archive, with_wal=False)
        return snapshot_name, archive

    def _store_file(self, source: Path, target: Path) -> dict[str, Any]:
        """Move a finished archive into place the way Qdrant does (``store_file`` in its snapshots manager):
        ``.tmp``, rename, and only then the ``.checksum`` sidecar, so a listing in between shows no checksum."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            checksum = sha256_file(source)
            tmp = target.with_suffix(".tmp")
            shutil.move(source, tmp)
            os.replace(tmp, target)
            self.checksum_written.wait(timeout=60)
            sidecar = target.with_name(target.name + ".checksum")
            sidecar.with_suffix(".tmp").write_text(checksum)
            os.replace(sidecar.with_suffix(".tmp"), sidecar)
        finally:
            source.unlink(missing_ok=True)
        return self.describe(target)

    def _build_snapshot(self, source: Path, archive: Path, *, with_wal: bool) -> None:
        """Qdrant's archive of a collection directory or of one shard's: every segment as a nested tar, the WAL
        in full (collection snapshots, with ``applied_seq.json``) or empty (shard snapshots)."""
        staging = self._tmp_path("snapshot-tree")
        try:
            shards = [source] if (source / "shard_config.json").is_file() else \
                [d for d in source.iterdir() if d.is_dir() and d.name.isdigit()]
            _copy_tree_without_segments(source, staging)
            for shard in shards:
                if not (shard / "segments").is_dir():  # a shard only other peers hold: its stub as it is
                    continue
                target = staging / shard.relative_to(source)
                for segment in sorted((shard / "segments").iterdir()):
                    nested = target / "segments" / f"{segment.name}.tar"
                    nested.parent.mkdir(parents=True, exist_ok=True)
                    with tarfile.open(nested, "w", format=tarfile.GNU_FORMAT, copybufsize=BLOCK) as tar:
                        tar.add(segment / SEGMENT_DATA, arcname="snapshot/files/data.bin")
                        tar.add(segment / "segment.json", arcname="segment.json")
                        info = tarfile.TarInfo("version.info")
                        info.size = len(b"1")
                        tar.addfile(info, io.BytesIO(b"1"))
                wal = target / "wal"
                if with_wal:
                    (target / "applied_seq.json").write_text('{"op_num":0}')
                else:
                    shutil.rmtree(wal, ignore_errors=True)
                    wal.mkdir(parents=True, exist_ok=True)
            _build_tar(staging, archive)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ----- recovery ---------------------------------------------------------------------------------------

    def recover_collection(self, name: str, archive: Path, *, local_shards: set[int] | None = None) -> None:
        """Replace (or create) collection ``name`` from a collection snapshot archive.

        The archive is unpacked and fully validated in the temp dir first; any problem answers 400 and
        the existing collection is not touched. A cluster peer passes ``local_shards``, the shards it holds a
        replica of: only those are taken from the archive (which must have their data), the others stay as they
        are (what real Qdrant keeps of a remote shard).
        """
        staging = self._tmp_path(f"recover-{name}")
        try:
            _unpack(archive, staging)
            config = self._validate_collection_tree(staging, local_shards)
            with self.locked(name):
                shard_ids = _tree_shard_ids(staging, config)
                if self.exists(name):
                    _check_compatible(self.config(name), config)
                if local_shards is not None:
                    self.require(name)
                    self._keep_cluster_shards(name, staging, shard_ids, local_shards)
                    shard_ids = sorted(local_shards)
                for shard_id in shard_ids:
                    self.set_shard_state(name, shard_id, "ManualRecovery")
                try:
                    for shard_id in shard_ids:  # a node's own data: it is this peer's local replica now
                        (staging / str(shard_id) / "replica_state.json").write_text(json.dumps(
                            {"is_local": True, "this_peer_id": self.peer_id,
                             "peers": {str(self.peer_id): "Active"}}))
                    self._swap_in(staging, self.collection_dir(name))
                finally:
                    for shard_id in shard_ids:
                        self.set_shard_state(name, shard_id, None)
                self.snapshot_dir(name).mkdir(parents=True, exist_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _keep_cluster_shards(self, name: str, staging: Path, archived: list[int], local_shards: set[int]) -> None:
        """A cluster peer's recovery takes only its local shards from the archive: the collection's other shards
        and its shard key mapping (consensus state in Qdrant, not the snapshot's) stay as they are."""
        current = self.collection_dir(name)
        existing = set(self.shard_ids(name))
        for shard_id in (existing | set(archived)) - local_shards:
            shutil.rmtree(staging / str(shard_id), ignore_errors=True)
            if shard_id in existing:
                shutil.copytree(current / str(shard_id), staging / str(shard_id))
        if (current / "shard_key_mapping.json").is_file():
            shutil.copyfile(current / "shard_key_mapping.json", staging / "shard_key_mapping.json")

    def recover_shard(self, name: str, shard_id: int, archive: Path) -> None:
        """Replace one shard's data from a shard snapshot archive (the shard must already exist)."""
        self.require_local_shard(name, shard_id)
        staging = self._tmp_path(f"recover-{name}-{shard_id}")
        try:
            _unpack(archive, staging)
            _validate_shard_tree(staging, "shard snapshot")
            with self.locked(name):
                self.require_local_shard(name, shard_id)
                self.set_shard_state(name, shard_id, "ManualRecovery")
                try:
                    self._swap_in(staging, self.collection_dir(name) / str(shard_id))
                finally:
                    self.set_shard_state(name, shard_id, None)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _swap_in(self, staging: Path, target: Path) -> None:
        trash = self._tmp_path("replaced")
        if target.exists():
            os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)

    def _validate_collection_tree(self, tree: Path, local_shards: set[int] | None = None) -> dict[str, Any]:
        try:
            config = json.loads((tree / "config.json").read_text())
            shard_ids = sorted(local_shards) if local_shards is not None else _tree_shard_ids(tree, config)
            version = (tree / "version.info").read_text()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise errors.wrong_input(f"Snapshot is not a valid collection snapshot: {exc}") from None
        # Qdrant refuses a collection written in a newer format than its own (the format version, 0.4.2 for
        # every 1.x release so far, is not Qdrant's version).
        if _version_tuple(version) > _version_tuple(FORMAT_VERSION):
            raise errors.wrong_input(
                f"Snapshot is not compatible with this Qdrant: collection format version {version.strip()} is "
                f"newer than {FORMAT_VERSION}")
        for shard_id in shard_ids:
            _validate_shard_tree(tree / str(shard_id), f"shard {shard_id}")
        return config

    @staticmethod
    def snapshot_config(archive: Path) -> dict[str, Any]:
        """The CollectionConfig inside a collection snapshot, read without unpacking the rest (400 if none)."""
        try:
            with tarfile.open(archive, "r:") as tar:
                for member in tar:
                    if member.name in ("config.json", "./config.json") and member.isfile():
                        source = tar.extractfile(member)
                        if source is not None:
                            config = json.loads(source.read())
                            int(config["params"]["shard_number"])
                            return config
        except (tarfile.TarError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
            raise errors.wrong_input(f"Snapshot is not a valid collection snapshot: {exc}") from None
        raise errors.wrong_input("Snapshot is not a valid collection snapshot: it has no config.json")


def _check_compatible(existing: dict[str, Any], incoming: dict[str, Any]) -> None:
    for key in ("vectors", "shard_number"):
        if existing["params"].get(key) != incoming["params"].get(key):
            raise errors.wrong_input(
                f"Snapshot is not compatible with existing collection: Collection {key} "
                f"{existing['params'].get(key)} is not equal to snapshot {key} {incoming['params'].get(key)}")


def _validate_shard_tree(shard_dir: Path, what: str) -> None:
    """Unpack the shard's nested segment archives in place and check every segment against its segment.json."""
    try:
        json.loads((shard_dir / "shard_config.json").read_text())
        nested = sorted((shard_dir / "segments").glob("*.tar"))
    except (OSError, ValueError) as exc:
        raise errors.wrong_input(f"Snapshot is corrupted: {what} is incomplete: {exc}") from None
    if not nested:
        raise errors.wrong_input(f"Snapshot is corrupted: {what} has no segments")
    for archive in nested:
        segment = archive.with_suffix("")
        _unpack(archive, segment / "unpacked")
        try:
            os.replace(segment / "unpacked" / "segment.json", segment / "segment.json")
            (segment / SEGMENT_DATA).parent.mkdir(parents=True, exist_ok=True)
            os.replace(segment / "unpacked" / "snapshot" / "files" / "data.bin", segment / SEGMENT_DATA)
            bookkeeping = json.loads((segment / "segment.json").read_text())["double"]
            points = int(bookkeeping["points_count"])
            expected_size, expected_sha = int(bookkeeping["data_size"]), str(bookkeeping["data_sha256"])
            actual_size = (segment / SEGMENT_DATA).stat().st_size
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise errors.wrong_input(f"Snapshot is corrupted: {what} has an incomplete segment: {exc}") from None
        finally:
            shutil.rmtree(segment / "unpacked", ignore_errors=True)
            archive.unlink(missing_ok=True)
        # The data's own sha256 (expected_sha) is deliberately not checked: real Qdrant may load damaged segment
        # bytes without noticing, so only a checksum sent with the recovery protects a restore.
        if points < 0 or actual_size != expected_size or not expected_sha:
            raise errors.wrong_input(f"Snapshot is corrupted: {what} segment data does not match its manifest")


def _payload_index_info(schema: Any, points: int) -> dict[str, Any]:
    """PayloadIndexInfo as collection info shows it: the type, its parameters when given as an object."""
    if isinstance(schema, dict):
        return {"data_type": schema.get("type"), "params": schema, "points": points}
    return {"data_type": schema, "points": points}


def _shard_points(shard_dir: Path) -> int:
    return sum(int(json.loads(p.read_text())["double"]["points_count"])
               for p in (shard_dir / "segments").glob("*/segment.json"))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_tree_without_segments(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` leaving out the contents of every ``segments`` folder (they are archived
    separately, as nested tars)."""
    shutil.copytree(source, target, ignore=lambda d, names: names if Path(d).name == "segments" else [])


def _build_tar(source_dir: Path, archive: Path) -> None:
    """An uncompressed tar of ``source_dir``'s contents (paths relative to it), like Qdrant's archives."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT, copybufsize=BLOCK) as tar:
        for path in sorted(source_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(source_dir).as_posix(), recursive=False)


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack an uncompressed tar safely; anything that is not one (or is damaged) is a 400."""
    try:
        with tarfile.open(archive, "r:", copybufsize=BLOCK) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise errors.wrong_input(f"Snapshot archive has an unexpected entry: {member.name!r}")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise errors.wrong_input(f"Failed to unpack snapshot archive: {exc}") from None
