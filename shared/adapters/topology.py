"""Where a Qdrant cluster's peers answer REST calls, and where a collection's shard replicas live.

Qdrant's ``GET /cluster`` names every peer by id and by its internal p2p URI (``http://host:6335/``), never
by its REST URL, so QBM maps one to the other:

1. ``QBM_QDRANT_PEERS`` entries, ``peer=REST URL``, where ``peer`` is a peer id or the p2p URI that
   ``GET /cluster`` shows (``101=http://10.0.0.1:6333`` or ``http://qdrant-1:6335=http://qdrant-1:6333``);
2. otherwise the host of the peer's p2p URI with the scheme and REST port of ``QBM_QDRANT_URL``;
3. the node ``QBM_QDRANT_URL`` points at is always reached there.

A collection's layout is read from one node: ``GET /collections/{c}/cluster`` lists that node's local
replicas and every other replica (peer and state), and the transfers and resharding under way, which are
cluster-wide (Raft state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.adapters.qdrant import QdrantClient, QdrantError

ACTIVE = "Active"


@dataclass(frozen=True)
class Peer:
    peer_id: int
    p2p_uri: str | None
    rest_url: str


@dataclass(frozen=True)
class Replica:
    peer_id: int
    state: str


@dataclass(frozen=True)
class Shard:
    shard_id: int
    replicas: tuple[Replica, ...]
    shard_key: Any = None

    def active_peers(self) -> list[int]:
        return [r.peer_id for r in self.replicas if r.state == ACTIVE]

    def describe_replicas(self) -> str:
        return ", ".join(f"peer {r.peer_id} {r.state}" for r in self.replicas) or "no replica at all"


@dataclass(frozen=True)
class Layout:
    """Every replica of every shard of a collection, and what is moving (as one node sees the Raft state)."""

    collection: str
    shards: dict[int, Shard]
    transfers: list[dict[str, Any]] = field(default_factory=list)
    resharding: list[dict[str, Any]] = field(default_factory=list)

    def busy_reason(self) -> str | None:
        """Why a consistent backup set cannot be taken now (None: it can)."""
        if self.transfers:
            moving = ", ".join(f"shard {t.get('shard_id')} from peer {t.get('from')} to peer {t.get('to')}"
                               for t in self.transfers)
            return f"collection {self.collection!r} has shard transfers in progress ({moving})"
        if self.resharding:
            return f"collection {self.collection!r} is being resharded"
        return None


def parse_layout(collection: str, info: dict[str, Any]) -> Layout:
    """``GET /collections/{c}/cluster``'s result as a :class:`Layout`."""
    replicas: dict[int, list[Replica]] = {}
    keys: dict[int, Any] = {}
    own = info.get("peer_id")
    for local in info.get("local_shards") or []:
        sid = int(local["shard_id"])
        replicas.setdefault(sid, []).append(Replica(int(own), str(local.get("state") or ACTIVE)))
        keys.setdefault(sid, local.get("shard_key"))
    for remote in info.get("remote_shards") or []:
        sid = int(remote["shard_id"])
        replicas.setdefault(sid, []).append(Replica(int(remote["peer_id"]), str(remote.get("state") or ACTIVE)))
        keys.setdefault(sid, remote.get("shard_key"))
    shards = {sid: Shard(sid, tuple(sorted(reps, key=lambda r: r.peer_id)), keys.get(sid))
              for sid, reps in sorted(replicas.items())}
    return Layout(collection, shards, list(info.get("shard_transfers") or []),
                  list(info.get("resharding_operations") or []))


class Topology:
    """The peers of the cluster behind ``client`` and a client for each (built on first use, then kept)."""

    def __init__(self, client: QdrantClient, peer_map: tuple[tuple[str, str], ...],
                 make_client: Callable[[str], QdrantClient]) -> None:
        self.client = client
        self._map = {key.rstrip("/"): url.rstrip("/") for key, url in peer_map}
        self._make_client = make_client
        self._clients: dict[str, QdrantClient] = {client.url: client}

    def rest_url(self, peer_id: int, p2p_uri: str | None, *, is_self: bool = False) -> str:
        """The REST URL of a peer (the rules in the module docstring)."""
        for key in (str(peer_id), (p2p_uri or "").rstrip("/")):
            if key and key in self._map:
                return self._map[key]
        if is_self or not p2p_uri:
            return self.client.url
        base = urlsplit(self.client.url)
        host = urlsplit(p2p_uri).hostname or base.hostname
        host = f"[{host}]" if host and ":" in host else host
        return f"{base.scheme}://{host}:{base.port or (443 if base.scheme == 'https' else 80)}"

    def peers(self) -> dict[int, Peer]:
        """Every peer of the cluster, with its REST URL; empty when Qdrant runs as a single node."""
        raw = self.client.cluster_status()
        if raw.get("status") != "enabled":
            return {}
        own = raw.get("peer_id")
        result = {}
        for pid, info in (raw.get("peers") or {}).items():
            uri = (info or {}).get("uri")
            result[int(pid)] = Peer(int(pid), uri, self.rest_url(int(pid), uri, is_self=int(pid) == own))
        return result

    def distributed(self) -> bool:
        """True when Qdrant runs as a cluster of more than one peer (then a collection snapshot taken through
        one node holds only that node's shards)."""
        return len(self.peers()) > 1

    def layout(self, collection: str) -> Layout:
        return parse_layout(collection, self.client.collection_cluster_info(collection))

    def shard_counts(self, collection: str, layout: Layout, peers: dict[int, Peer]) -> dict[int, int]:
        """Each shard's points count as a peer holding it reports it (``local_shards``; a peer reports only its
        own; ``peers`` as :meth:`peers` gave them, empty for a single node). Qdrant counts per shard id only
        this way, and only approximately (segment statistics): a figure to compare, not proof. Peers that do
        not answer are skipped."""
        holders = sorted({r.peer_id for s in layout.shards.values() for r in s.replicas} & set(peers))
        clients = [self.client_for(peers[pid]) for pid in holders] if peers else [self.client]  # or single node
        counts: dict[int, int] = {}
        for client in clients:
            try:
                local = client.collection_cluster_info(collection).get("local_shards") or []
            except QdrantError:
                continue
            for entry in local:
                if entry.get("points_count") is not None and entry.get("state", ACTIVE) == ACTIVE:
                    counts.setdefault(int(entry["shard_id"]), int(entry["points_count"]))
        return counts

    def client_for(self, peer: Peer | str) -> QdrantClient:
        url = peer.rest_url if isinstance(peer, Peer) else peer
        if url not in self._clients:
            self._clients[url] = self._make_client(url)
        return self._clients[url]

    def reachable(self, peer: Peer) -> str | None:
        """None when QBM can talk to the peer at its REST URL, else why not."""
        try:
            self.client_for(peer).root()
        except QdrantError as exc:
            return exc.message
        return None
