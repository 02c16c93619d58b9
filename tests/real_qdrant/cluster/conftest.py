"""QBM configured against the session's 3-peer cluster for the tests in this folder: it talks to
the first peer and is told every peer's REST URL by its p2p URI (the peers share one host)."""

from __future__ import annotations

import pytest

from tests.real_qdrant.helpers import cluster_engine_config
from tests.real_qdrant.qdrant_process import QdrantCluster, QdrantNode


@pytest.fixture
def qbm_qdrant(qdrant_cluster: QdrantCluster) -> QdrantNode:
    return qdrant_cluster.peers[0]


@pytest.fixture
def engine_config(redis_url, key_prefix, qdrant_cluster, tmp_path, secret_key):  # noqa: ANN001, ANN201
    return cluster_engine_config(qdrant_cluster, redis_url, key_prefix, tmp_path, secret_key)
