"""Where QBM reaches each Qdrant peer (QBM_QDRANT_PEERS and the default rule), the shard layout it reads, and
the per-peer stream slots shared by every worker (real Redis)."""

from __future__ import annotations

import pytest

from shared.adapters.locks import Slots
from shared.adapters.qdrant import QdrantClient
from shared.adapters.topology import Topology, parse_layout
from shared.runtime.config import ConfigError, load_config
from tests.waiting import wait_until


def _topology(url: str, peers: tuple[tuple[str, str], ...] = ()) -> Topology:
    return Topology(QdrantClient(url), peers, QdrantClient)


def test_peer_rest_urls_by_setting_then_by_the_default_rule():
    topology = _topology("http://qdrant-0:6333", (("7", "http://ten:7000"), ("http://qdrant-2:6335", "https://two")))
    assert topology.rest_url(7, "http://qdrant-7:6335/") == "http://ten:7000"  # by peer id
    assert topology.rest_url(2, "http://qdrant-2:6335/") == "https://two"  # by p2p URI
    # Default: the p2p URI's host, QBM_QDRANT_URL's scheme and REST port.
    assert topology.rest_url(3, "http://10.0.0.3:6335/") == "http://10.0.0.3:6333"
    assert topology.rest_url(4, "http://[fd00::4]:6335/") == "http://[fd00::4]:6333"
    # The node QBM_QDRANT_URL names is reached there, whatever its p2p URI says.
    assert topology.rest_url(1, "http://internal-name:6335/", is_self=True) == "http://qdrant-0:6333"


def test_the_peers_setting_is_checked_at_start():
    config = load_config({"QBM_QDRANT_PEERS": "101=http://a:6333, http://b:6335=http://b:6333"})
    assert config.qdrant_peers == (("101", "http://a:6333"), ("http://b:6335", "http://b:6333"))
    for bad in ("101", "=http://a:6333", "101=ftp://a", "101=http://"):
        with pytest.raises(ConfigError, match="QBM_QDRANT_PEERS"):
            load_config({"QBM_QDRANT_PEERS": bad})
    with pytest.raises(ConfigError, match="QBM_PEER_STREAMS must be at least 1"):
        load_config({"QBM_PEER_STREAMS": "0"})


def test_layout_merges_the_local_and_remote_replicas_and_names_what_moves():
    info = {"peer_id": 1, "shard_count": 3,
            "local_shards": [{"shard_id": 0, "points_count": 5, "state": "Active"},
                             {"shard_id": 2, "points_count": 5, "state": "Partial"}],
            "remote_shards": [{"shard_id": 0, "peer_id": 2, "state": "Dead"},
                              {"shard_id": 1, "peer_id": 2, "state": "Active"},
                              {"shard_id": 2, "peer_id": 3, "state": "Active"}],
            "shard_transfers": []}
    layout = parse_layout("docs", info)
    assert sorted(layout.shards) == [0, 1, 2]
    assert layout.shards[0].active_peers() == [1]
    assert layout.shards[2].active_peers() == [3]
    assert layout.shards[0].describe_replicas() == "peer 1 Active, peer 2 Dead"
    assert layout.busy_reason() is None
    moving = parse_layout("docs", {**info, "shard_transfers": [{"shard_id": 1, "from": 2, "to": 3}]})
    assert moving.busy_reason() == ("collection 'docs' has shard transfers in progress (shard 1 from peer 2 to "
                                    "peer 3)")
    assert "resharded" in parse_layout("docs", {**info, "resharding_operations": [{}]}).busy_reason()


def test_stream_slots_hold_at_most_the_limit_and_free_on_release_or_expiry(redis_client, key_prefix):
    slots = Slots(redis_client, f"{key_prefix}peer-streams:1", limit=2, ttl_ms=60_000)
    assert slots.take("a") and slots.take("b")
    assert not slots.take("c")  # both slots held
    assert slots.take("a")  # a holder renews its own
    slots.release("a")
    assert slots.take("c")
    short = Slots(redis_client, f"{key_prefix}peer-streams:2", limit=1, ttl_ms=1)
    assert short.take("dead-worker")
    # A holder that stopped renewing frees its slot once the slot expires (1 ms here).
    wait_until(lambda: short.take("next"), timeout=5, what="the expired slot to be free")
