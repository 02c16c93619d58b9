"""A distributed Qdrant made of Qdrant doubles: N peers, each its own HTTP server, port, store and snapshots dir,
sharing one layout (which peer holds a replica of which shard, in which state; shard transfers; resharding).

Public surface (QBM's cluster-aware backup sets are tested against exactly these names)::

    cluster = DoubleCluster(root, peers=3, api_key=None, version="1.18.3", first_peer_id=101,
                            distinct_hosts=False)   # True: peer i on 127.0.0.<i+1>, one REST port for all
    cluster.start() / cluster.stop() / with DoubleCluster(...) as cluster:
    cluster.peers, cluster.peer_ids (101, 102, ...), cluster.rest_urls, cluster.p2p_uris, cluster.url
    cluster.peer(peer_id) -> QdrantDouble
    cluster.create_collection(name, points=1000, size_bytes=256 * 1024, shard_number=6, replication_factor=2)
    cluster.replicas(name) -> {shard id: {peer id: state}}
    cluster.set_replica_state(name, shard_id, peer_id, state)
    cluster.start_transfer(name, shard_id, from_peer, to_peer) / cluster.finish_transfers(name)
    cluster.start_resharding(name) / cluster.finish_resharding(name)
    cluster.kill(peer_id) / cluster.revive(peer_id)
    cluster.points_count(name), cluster.shard_points(name, shard_id)
    cluster.create_custom_sharded(name, keys={"tenant-a": 300, 7: 120}, shards_per_key=2, replication_factor=2,
                                  size_bytes=256 * 1024) -> {key: [shard ids]}
    cluster.add_shard_key(name, key, shards_number=None, replication_factor=None, placement=None,
                          initial_state=None, points=0, size_bytes=0) -> [shard ids]   # PUT .../shards
    cluster.shard_keys(name) -> {shard id: key}, cluster.key_points(name, key)
    cluster.drop_collection(name), cluster.collection_exists(name)
    cluster.aliases(), cluster.payload_indexes(name)
    cluster.snapshot_files_everywhere()
    cluster.resync_gate                  # clear it to hold replica resyncs (replicas stay Dead/Partial)
    cluster.wait_for_resync(timeout)     # True when no resync is running

Placement is Qdrant's round robin: the replicas of shard ``s`` live on peers ``[(s + r) % n for r in range(rf)]``
(indexes into ``peer_ids``), and every replica of a shard holds the same data. A collection with custom sharding
starts without shards; each shard key adds its own, numbered on from the highest shard id (Qdrant's
``max_shard_id() + 1``, so the first key's shards are 1..n, not 0..n-1), their replicas taken in turn from the
peers (or the key's ``placement``) as Qdrant's ``generate_even_placement`` does, without its shuffle. What a peer
answers over HTTP is in server.py (it asks this object for the layout and for counts over the whole collection).
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.qdrant_double import errors
from tests.qdrant_double.aliases import AliasTable
from tests.qdrant_double.server import QdrantDouble
from tests.qdrant_double.store import Store, default_config, initial_shard_ids, key_shard_ids

log = logging.getLogger(__name__)

FIRST_PEER_ID = 101
#: Replica states a shard key's shards may start in (``initial_state``), as Qdrant allows.
KEY_INITIAL_STATES = ("Active", "Partial")


class ClusterLayout:
    """Which peer holds a replica of which shard, and in which state, per collection; plus shard transfers and
    resharding operations. Thread-safe: peers read it from their request threads."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.replicas: dict[str, dict[int, dict[int, str]]] = {}
        self.transfers: dict[str, list[dict[str, Any]]] = {}
        self.resharding: dict[str, list[dict[str, Any]]] = {}
        #: Custom sharding: shard id -> shard key, per collection (Qdrant's shard key mapping).
        self.keys: dict[str, dict[int, Any]] = {}

    def place(self, name: str, placement: dict[int, dict[int, str]]) -> None:
        with self.lock:
            self.replicas[name] = placement
            self.transfers[name] = []
            self.resharding[name] = []
            self.keys[name] = {}

    def forget(self, name: str) -> None:
        with self.lock:
            for table in (self.replicas, self.transfers, self.resharding, self.keys):
                table.pop(name, None)

    def add_key_shards(self, name: str, placement: dict[int, dict[int, str]], key: Any) -> None:
        """A new shard key's shards join the layout (every peer sees them at once, as after consensus)."""
        with self.lock:
            self.shards(name)
            self.replicas[name].update(placement)
            self.keys[name].update(dict.fromkeys(placement, key))

    def shard_keys(self, name: str) -> dict[int, Any]:
        """A copy: shard id -> shard key (empty for a collection without custom sharding)."""
        with self.lock:
            self.shards(name)
            return dict(self.keys.get(name, {}))

    def shards(self, name: str) -> dict[int, dict[int, str]]:
        """A copy: shard id -> {peer id: state}."""
        with self.lock:
            if name not in self.replicas:
                raise errors.collection_not_found(name)
            return {shard: dict(peers) for shard, peers in self.replicas[name].items()}

    def set_state(self, name: str, shard_id: int, peer_id: int, state: str) -> None:
        with self.lock:
            peers = self.shards(name).get(shard_id)
            if peers is None or peer_id not in peers:
                raise ValueError(f"peer {peer_id} holds no replica of shard {shard_id} of {name!r}")
            self.replicas[name][shard_id][peer_id] = state


class DoubleCluster:
    """N Qdrant doubles acting as one distributed Qdrant (see the module docstring)."""

    def __init__(self, root: Path, peers: int = 3, *, api_key: str | None = None, version: str = "1.18.3",
                 first_peer_id: int = FIRST_PEER_ID, distinct_hosts: bool = False) -> None:
        if peers < 1:
            raise ValueError("a cluster needs at least one peer")
        self.root = Path(root)
        #: Peer i on 127.0.0.<i+1>, all on one REST port, p2p URIs on port 6335 of the same address: a layout where
        #: "the peer's p2p host with the REST port of the first peer" finds every peer (real clusters look so).
        self.distinct_hosts = distinct_hosts
        self.layout = ClusterLayout()
        self.alias_table = AliasTable()
        self.peer_ids: list[int] = [first_peer_id + i for i in range(peers)]
        self.peers: list[QdrantDouble] = []
        for peer_id in self.peer_ids:
            double = QdrantDouble(self.root / f"peer-{peer_id}", api_key=api_key, peer_id=peer_id, version=version)
            double.cluster = self
            double.alias_table = self.alias_table
            self.peers.append(double)
        self.p2p_uris: dict[int, str] = {}
        self.rest_urls: dict[int, str] = {}
        self.killed: set[int] = set()
        self.term = 1
        self.commit = 10
        #: Set: replica resyncs run at once. Clear it to hold them (the replicas stay Dead, then Partial).
        self.resync_gate = threading.Event()
        self.resync_gate.set()
        self._resyncs: set[threading.Thread] = set()
        self._stale: set[tuple[str, int, int]] = set()  # (collection, shard, peer) to resync when it is back
        self._lock = threading.Lock()

    # ----- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> DoubleCluster:
        """Serve every peer (again, on the same addresses after a stop); a killed peer is revived."""
        if self.distinct_hosts:
            self._start_on_distinct_hosts()
        else:
            for double in self.peers:
                double.start(double.port)
                if double.peer_id not in self.p2p_uris:
                    self.p2p_uris[double.peer_id] = f"http://127.0.0.1:{_unused_port()}/"
        for double in self.peers:
            self.rest_urls[double.peer_id] = double.url
        for peer_id in sorted(self.killed):
            self._mark_alive(peer_id)
        return self

    def _start_on_distinct_hosts(self, attempts: int = 20) -> None:
        """Every peer on its own loopback address and the same port (a free one on all of them)."""
        for _ in range(attempts):
            port = self.peers[0].port
            try:
                for index, double in enumerate(self.peers):
                    double.start(port, host=f"127.0.0.{index + 1}")
                    port = double.port
                    self.p2p_uris[double.peer_id] = f"http://127.0.0.{index + 1}:6335/"
                return
            except OSError:  # that port is taken on one of the addresses: try another one on all of them
                for double in self.peers:
                    double.stop()
                    double.port = None
        raise RuntimeError(f"no port free on 127.0.0.1-{len(self.peers)} after {attempts} attempts")

    def stop(self) -> None:
        self.resync_gate.set()
        self.wait_for_resync(timeout=30)
        for double in self.peers:
            double.stop()

    def __enter__(self) -> DoubleCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.peers[0].url

    def peer(self, peer_id: int) -> QdrantDouble:
        for double in self.peers:
            if double.peer_id == peer_id:
                return double
        raise KeyError(f"no peer {peer_id} in this cluster (peers: {self.peer_ids})")

    def stores(self) -> list[Store]:
        return [double.store for double in self.peers]

    def kill(self, peer_id: int) -> None:
        """Stop the peer's server (connections refused) and mark its replicas Dead."""
        double = self.peer(peer_id)
        with self.layout.lock:
            self.killed.add(peer_id)
            self.term += 1
            for shards in self.layout.replicas.values():
                for peers in shards.values():
                    if peer_id in peers:
                        peers[peer_id] = "Dead"
        double.stop()

    def revive(self, peer_id: int) -> None:
        """Serve the peer again on the same port; its replicas are Active again, those recovered elsewhere while
        it was down first get the recovered data."""
        double = self.peer(peer_id)
        double.start(double.port, host=double.host)
        self._mark_alive(peer_id)

    def _mark_alive(self, peer_id: int) -> None:
        with self.layout.lock:
            self.killed.discard(peer_id)
            self.term += 1
            stale = {(n, s) for (n, s, p) in self._stale if p == peer_id}
            self._stale = {entry for entry in self._stale if entry[2] != peer_id}
            for name, shards in self.layout.replicas.items():
                for shard_id, peers in shards.items():
                    if peer_id in peers:
                        if (name, shard_id) in stale:
                            self._copy_replica(name, shard_id, peer_id)
                        peers[peer_id] = "Active"

    # ----- collections --------------------------------------------------------------------------------

    def create_collection(self, name: str, *, points: int = 1000, size_bytes: int = 256 * 1024,
                          shard_number: int = 6, replication_factor: int = 2, vector_size: int = 4) -> None:
        """Create a collection on every peer: ``points`` points and ``size_bytes`` of data over its shards."""
        config = default_config({"size": vector_size, "distance": "Cosine"}, shard_number, replication_factor)
        self.create_from_config(name, config, points=points, size_bytes=size_bytes)

    def create_from_config(self, name: str, config: dict[str, Any], *, points: int = 0,
                           size_bytes: int = 0) -> None:
        """What ``PUT /collections/{name}`` on any peer does: the collection on every peer, replicas placed."""
        shard_ids = initial_shard_ids(config)
        replication_factor = min(int(config["params"].get("replication_factor") or 1), len(self.peer_ids))
        if self.collection_exists(name):
            raise errors.wrong_input(f"Collection `{name}` already exists!")
        # Built once outside the lock (it may be large); the peers' copies are hard links to it.
        tree = self.peers[0].store.build_tree(f"cluster-{name}", config=config, points=points,
                                              size_bytes=size_bytes)
        try:
            with self.layout.lock:
                if name in self.layout.replicas or self.collection_exists(name):
                    raise errors.wrong_input(f"Collection `{name}` already exists!")
                placement = {
                    shard: {self.peer_ids[(shard + r) % len(self.peer_ids)]: "Active"
                            for r in range(replication_factor)}
                    for shard in shard_ids}
                for peers in placement.values():
                    for peer_id in peers:
                        if peer_id in self.killed:
                            peers[peer_id] = "Dead"
                for double in self.peers:
                    double.store.install(name, tree, replicas=placement)
                self.layout.place(name, placement)
                self.commit += 1
        finally:
            _remove_tree(tree)

    # ----- custom sharding (shard keys) ------------------------------------------------------------------

    def create_custom_sharded(self, name: str, keys: dict[Any, int], *, shards_per_key: int = 1,
                              replication_factor: int = 2, size_bytes: int = 256 * 1024,
                              vector_size: int = 4) -> dict[Any, list[int]]:
        """A collection with custom sharding and its shard keys, made in the order of ``keys`` (key -> points,
        split over the key's shards; ``size_bytes`` split evenly over the keys): what a multi-tenant collection
        looks like to a backup. Returns each key's shard ids."""
        config = default_config({"size": vector_size, "distance": "Cosine"}, shards_per_key, replication_factor)
        config["params"]["sharding_method"] = "custom"
        self.create_from_config(name, config)
        share, extra = divmod(size_bytes, len(keys) or 1)
        sizes = [share + (1 if i < extra else 0) for i in range(len(keys))]
        return {key: self.add_shard_key(name, key, points=points, size_bytes=size)
                for (key, points), size in zip(keys.items(), sizes, strict=True)}

    def add_shard_key(self, name: str, key: Any, *, shards_number: int | None = None,
                      replication_factor: int | None = None, placement: list[int] | None = None,
                      initial_state: str | None = None, points: int = 0, size_bytes: int = 0) -> list[int]:
        """What ``PUT /collections/{name}/shards`` does on any peer (its checks and messages are Qdrant's, from
        src/common/collections.rs ``do_update_collection_cluster``), plus ``points`` and ``size_bytes`` of data
        split over the new shards for tests. Returns the new shard ids."""
        with self.layout.lock:
            params = self._check_new_key(name, key, placement, initial_state)["params"]
            number = shards_number or int(params["shard_number"])
            factor = replication_factor or (1 if initial_state else int(params.get("replication_factor") or 1))
            first = max(self.layout.shard_keys(name), default=0) + 1  # Qdrant's max_shard_id() + 1
            shard_ids = list(range(first, first + number))
            replicas = self._key_placement(shard_ids, placement or self.peer_ids, factor, initial_state or "Active")
            tree = self.peers[0].store.build_shards(f"key-{name}", shard_ids, points=points, size_bytes=size_bytes)
            try:
                for double in self.peers:
                    double.store.add_shards(name, tree, replicas=replicas, key=key)
                self.layout.add_key_shards(name, replicas, key)
                self.commit += 1
            finally:
                _remove_tree(tree)
        return shard_ids

    def _check_new_key(self, name: str, key: Any, placement: list[int] | None,
                       initial_state: str | None) -> dict[str, Any]:
        """Qdrant's checks before a shard key is created, in its order; returns the collection's config."""
        if not self.collection_exists(name):
            raise errors.collection_not_found(name)
        config = self.peers[0].store.config(name)
        if config["params"].get("sharding_method") != "custom":
            raise errors.bad_request("Shard Key cannot be created with Auto sharding method")
        if initial_state is not None and initial_state not in KEY_INITIAL_STATES:
            raise errors.bad_request(f"Initial state cannot be {initial_state}, only Active or Partial are allowed")
        shown = errors.shard_key_text(key)
        if key in self.layout.shard_keys(name).values():
            raise errors.bad_request(f"Sharding key {shown} already exists for collection {name}")
        if placement is not None and not placement:
            raise errors.bad_request(f"Sharding key {shown} placement cannot be empty. If you want to use random "
                                     "placement, do not specify placement")
        for peer_id in placement or []:
            if peer_id not in self.peer_ids:
                raise errors.bad_request(f"Peer {peer_id} does not exist")
        return config

    def _key_placement(self, shard_ids: list[int], pool: list[int], factor: int,
                       state: str) -> dict[int, dict[int, str]]:
        """Qdrant's ``generate_even_placement`` without the shuffle: replicas taken in turn from ``pool``,
        continuing over the collection's shard ids (so successive keys spread over the peers); at most one replica
        per peer. A killed peer's replicas start Dead, as for a new collection."""
        factor = min(factor, len(pool))
        placement = {}
        for shard_id in shard_ids:
            peers = [pool[((shard_id - 1) * factor + r) % len(pool)] for r in range(factor)]
            placement[shard_id] = {p: "Dead" if p in self.killed else state for p in peers}
        return placement

    def shard_keys(self, name: str) -> dict[int, Any]:
        """shard id -> shard key of a custom-sharded collection (empty otherwise)."""
        return self.layout.shard_keys(name)

    def key_points(self, name: str, key: Any) -> int:
        """Exact points count of one shard key (one replica per shard); 400 as Qdrant's for an unknown key."""
        return sum(self.shard_points(name, shard_id) for shard_id in key_shard_ids(self.shard_keys(name), key))

    def drop_collection(self, name: str) -> bool:
        """What ``DELETE /collections/{name}`` on any peer does: gone from every peer, with its aliases."""
        with self.layout.lock:
            dropped = [double.store.drop(name) for double in self.peers]
            self.layout.forget(name)
            self._stale = {entry for entry in self._stale if entry[0] != name}
            self.commit += 1
        self.alias_table.drop_collection(name)
        return any(dropped)

    def collection_exists(self, name: str) -> bool:
        return any(double.store.exists(name) for double in self.peers)

    def aliases(self) -> dict[str, str]:
        return self.alias_table.snapshot()

    def payload_indexes(self, name: str) -> dict[str, Any]:
        return self.peers[0].store.payload_indexes(name)

    # ----- layout ---------------------------------------------------------------------------------------

    def replicas(self, name: str) -> dict[int, dict[int, str]]:
        return self.layout.shards(name)

    def set_replica_state(self, name: str, shard_id: int, peer_id: int, state: str) -> None:
        self.layout.set_state(name, shard_id, peer_id, state)

    def start_transfer(self, name: str, shard_id: int, from_peer: int, to_peer: int) -> None:
        """A shard move (``stream_records``) from ``from_peer`` to ``to_peer``: shown in every peer's layout;
        the receiving replica is Partial until ``finish_transfers``."""
        with self.layout.lock:
            peers = self.layout.shards(name)[shard_id]
            if from_peer not in peers or to_peer in peers:
                raise ValueError(f"shard {shard_id} of {name!r} cannot move from {from_peer} to {to_peer}: "
                                 f"its replicas are on {sorted(peers)}")
            self.layout.replicas[name][shard_id][to_peer] = "Partial"
            self._copy_replica(name, shard_id, to_peer, source=from_peer)
            self.layout.transfers[name].append({"shard_id": shard_id, "from": from_peer, "to": to_peer,
                                                "sync": False, "method": "stream_records"})

    def finish_transfers(self, name: str) -> None:
        """Every started move completes: the receiving replica is Active, the source replica is gone."""
        with self.layout.lock:
            for transfer in self.layout.transfers.get(name, []):
                if transfer["sync"]:
                    continue
                shard_id, source, target = transfer["shard_id"], transfer["from"], transfer["to"]
                peers = self.layout.replicas[name][shard_id]
                peers[target] = "Active"
                peers.pop(source, None)
                self.peer(source).store.remove_shard_data(name, shard_id, dict(peers))
            self.layout.transfers[name] = [t for t in self.layout.transfers.get(name, []) if t["sync"]]

    def start_resharding(self, name: str, direction: str = "up") -> None:
        """A resharding operation shown in every peer's layout (no data moves: the double only shows it)."""
        with self.layout.lock:
            shard_number = len(self.layout.shards(name))
            self.layout.resharding[name].append({
                "direction": direction, "shard_id": shard_number if direction == "up" else shard_number - 1,
                "peer_id": self.peer_ids[0]})

    def finish_resharding(self, name: str) -> None:
        with self.layout.lock:
            self.layout.shards(name)
            self.layout.resharding[name] = []

    # ----- counts ---------------------------------------------------------------------------------------

    def shard_points(self, name: str, shard_id: int) -> int:
        """The shard's exact points count, from one replica holding it (an Active one if there is one)."""
        peers = self.layout.shards(name).get(shard_id)
        if peers is None:
            raise errors.shard_not_found(shard_id)
        ordered = sorted(peers, key=lambda p: (peers[p] != "Active", p))
        return self.peer(ordered[0]).store.shard_points(name, shard_id)

    def points_count(self, name: str) -> int:
        """Exact total over the collection (one replica per shard)."""
        return sum(self.shard_points(name, shard_id) for shard_id in self.layout.shards(name))

    def snapshot_files_everywhere(self) -> list[Path]:
        """Every file in every peer's snapshots dir (uploads being received included)."""
        return sorted(p for double in self.peers for p in double.snapshots_path.rglob("*") if p.is_file())

    # ----- what peers answer ------------------------------------------------------------------------------

    def cluster_status(self, peer_id: int) -> dict[str, Any]:
        """``GET /cluster`` on ``peer_id``: every peer, one leader (the first peer alive), consensus working."""
        with self.layout.lock:
            alive = [p for p in self.peer_ids if p not in self.killed]
            leader = alive[0] if alive else self.peer_ids[0]
            term, commit = self.term, self.commit
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "status": "enabled",
            "peer_id": peer_id,
            "peers": {str(p): {"uri": self.p2p_uris[p]} for p in self.peer_ids},
            "raft_info": {"term": term, "commit": commit, "pending_operations": 0, "leader": leader,
                          "role": "Leader" if leader == peer_id else "Follower", "is_voter": True},
            "consensus_thread_status": {"consensus_thread_status": "working", "last_update": now},
            "message_send_failures": {},
        }

    def collection_view(self, peer_id: int, name: str) -> dict[str, Any]:
        """``GET /collections/{name}/cluster`` on ``peer_id``."""
        store = self.peer(peer_id).store
        with self.layout.lock:
            shards = self.layout.shards(name)
            transfers = [dict(t) for t in self.layout.transfers.get(name, [])]
            resharding = [dict(r) for r in self.layout.resharding.get(name, [])]
            keys = dict(self.layout.keys.get(name, {}))
        local, remote = [], []
        for shard_id, peers in sorted(shards.items()):
            # Qdrant's LocalShardInfo / RemoteShardInfo skip ``shard_key`` when the shard has none.
            key = {"shard_key": keys[shard_id]} if shard_id in keys else {}
            for holder, state in sorted(peers.items()):
                if holder == peer_id:
                    if state == "Active":  # a recovery running on this peer shows as ManualRecovery
                        state = store.shard_state(name, shard_id)
                    local.append({"shard_id": shard_id, **key, "points_count": store.shard_points(name, shard_id),
                                  "state": state})
                else:
                    remote.append({"shard_id": shard_id, **key, "peer_id": holder, "state": state})
        view: dict[str, Any] = {"peer_id": peer_id, "shard_count": len(shards), "local_shards": local,
                                "remote_shards": remote, "shard_transfers": transfers}
        if resharding:
            view["resharding_operations"] = resharding
        return view

    # ----- replica resync after a shard recovery -----------------------------------------------------------

    def replica_recovered(self, peer_id: int, name: str, shard_id: int) -> None:
        """A shard snapshot was recovered into ``peer_id``'s replica: like Qdrant, the other replicas are marked
        Dead at once, then resync from it in the background (Partial, with a sync transfer shown) and end Active.
        A replica on a killed peer stays Dead until the peer is revived."""
        with self.layout.lock:
            peers = self.layout.replicas[name][shard_id]
            peers[peer_id] = "Active"
            others = [p for p in peers if p != peer_id]
            for other in others:
                peers[other] = "Dead"
                if other in self.killed:
                    self._stale.add((name, shard_id, other))
            targets = [p for p in others if p not in self.killed]
        for target in targets:
            thread = threading.Thread(target=self._resync, args=(name, shard_id, peer_id, target),
                                      name=f"qdrant-double-resync-{name}-{shard_id}-{target}", daemon=True)
            with self._lock:
                self._resyncs.add(thread)
            thread.start()

    def recover_collection(self, peer_id: int, name: str, archive: Path) -> None:
        """A collection snapshot recovered through ``peer_id`` (C5/C6): a missing collection is first created on
        every peer from the snapshot's config (empty); then that peer's replicas take the archive's data for their
        shards (which the archive must hold) and the other replicas of those shards resync from them. Shards the
        peer does not hold are left alone, whatever the archive has for them."""
        store = self.peer(peer_id).store
        if not store.exists(name):
            try:
                self.create_from_config(name, Store.snapshot_config(archive))
            except errors.ApiError as exc:
                if not store.exists(name):  # not a race with another recovery creating it
                    raise exc from None
        local = {shard for shard, peers in self.layout.shards(name).items() if peer_id in peers}
        store.recover_collection(name, archive, local_shards=local)
        indexes = store.payload_indexes(name)  # collection-wide in Qdrant (consensus): the snapshot's, everywhere
        for other in self.peers:
            if other.store is not store:
                other.store.set_payload_indexes(name, indexes)
        for shard_id in sorted(local):
            self.replica_recovered(peer_id, name, shard_id)

    def wait_for_resync(self, timeout: float = 30.0) -> bool:
        """True when no replica resync is running (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                running = [t for t in self._resyncs if t.is_alive()]
            if not running:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            running[0].join(timeout=remaining)

    def _resync(self, name: str, shard_id: int, source: int, target: int) -> None:
        transfer = {"shard_id": shard_id, "from": source, "to": target, "sync": True, "method": "stream_records"}
        try:
            self.resync_gate.wait()
            with self.layout.lock:
                if self.layout.replicas.get(name, {}).get(shard_id, {}).get(target) != "Dead":
                    return  # dropped, moved or already resynced meanwhile
                self.layout.replicas[name][shard_id][target] = "Partial"
                self.layout.transfers[name].append(transfer)
            try:
                self.peer(target).store.install_shard(name, shard_id, self.peer(source).store,
                                                      self.layout.shards(name)[shard_id])
                with self.layout.lock:
                    peers = self.layout.replicas.get(name, {}).get(shard_id, {})
                    if target in self.killed:
                        self._stale.add((name, shard_id, target))
                        peers[target] = "Dead"
                    elif peers.get(target) == "Partial":  # not marked Dead again by a later recovery meanwhile
                        peers[target] = "Active"
            finally:
                with self.layout.lock:
                    if name in self.layout.transfers:
                        self.layout.transfers[name] = [t for t in self.layout.transfers[name] if t is not transfer]
        except errors.ApiError as exc:  # the collection was dropped meanwhile
            log.info("qdrant double cluster: resync of %s shard %s to peer %s ended: %s", name, shard_id, target,
                     exc.message)
        except Exception:  # noqa: BLE001 - a test double's background work: logged, replica stays non-Active
            log.exception("qdrant double cluster: resync of %s shard %s to peer %s failed", name, shard_id, target)
        finally:
            with self._lock:
                self._resyncs.discard(threading.current_thread())

    def _copy_replica(self, name: str, shard_id: int, target: int, *, source: int | None = None) -> None:
        """Copy a shard's data to ``target``'s replica from ``source`` (default: an Active replica elsewhere)."""
        peers = self.layout.replicas[name][shard_id]
        if source is None:
            candidates = [p for p, state in peers.items() if p != target and state == "Active"]
            if not candidates:
                return
            source = candidates[0]
        self.peer(target).store.install_shard(name, shard_id, self.peer(source).store, dict(peers))


def _unused_port() -> int:
    """A loopback port nothing listens on now (the peers' p2p URIs only need to look real)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _remove_tree(tree: Path) -> None:
    shutil.rmtree(tree, ignore_errors=True)
