"""Fixtures for the tests against a real Qdrant server (the binary named by ``QBM_TEST_QDRANT_BIN``).

* ``qdrant_node``: one single-node Qdrant for the whole session (each test makes and drops its own collections);
  ``start_qdrant_node``: a node of the test's own, for tests that stop and start it.
* ``qdrant_cluster``: three peers in distributed mode, for the whole session.
* The engine's real processes as in ``tests/engine``: the API (Flask test client, every answer checked against
  the OpenAPI document the app serves) and a real ``qbm worker`` subprocess, both configured with the node's URL
  and API key, against the real Redis.

Without ``QBM_TEST_QDRANT_BIN`` every test here is reported skipped, with the reason. When a test fails, the last
lines of every running Qdrant's log are added to its report.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.app import create_app
from shared.runtime.config import Config
from tests.api.helpers import CheckedClient, SpecChecker
from tests.engine.conftest import jobs, make_engine_config, start_worker, worker, worker_env_for  # noqa: F401 - fixtures shared with the engine tests
from tests.real_qdrant import data
from tests.real_qdrant.qdrant_process import LIVE_NODES, SKIP_REASON, QdrantCluster, QdrantNode, qdrant_binary
from tests.real_qdrant.throttle import ThrottledProxy

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if qdrant_binary():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and HERE in Path(str(item.path)).resolve().parents:
        for node in LIVE_NODES:
            report.sections.append((f"Qdrant log: {node.name} ({node.url})", node.log_tail()))


_SEEN_VERSIONS: set[str] = set()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for seen in sorted(_SEEN_VERSIONS):
        terminalreporter.write_line(f"real Qdrant: {seen}")


@pytest.fixture(scope="session")
def qdrant_bin() -> str:
    binary = qdrant_binary()
    if not binary:
        pytest.skip(SKIP_REASON)
    return binary


@pytest.fixture(scope="session")
def qdrant_node(qdrant_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantNode]:
    node = QdrantNode(qdrant_bin, tmp_path_factory.mktemp("qdrant-node"), name="node").start()
    root = node.get("/")
    _SEEN_VERSIONS.add(f"{qdrant_bin}: GET / says version {root['version']} (commit {root.get('commit')})")
    yield node
    node.remove()


@pytest.fixture
def start_qdrant_node(qdrant_bin: str, tmp_path: Path) -> Iterator[Callable[[], QdrantNode]]:
    started: list[QdrantNode] = []

    def start() -> QdrantNode:
        node = QdrantNode(qdrant_bin, tmp_path / f"qdrant-{len(started)}", name=f"own-node-{len(started)}")
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.remove()


@pytest.fixture(scope="session")
def qdrant_cluster(qdrant_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantCluster]:
    cluster = QdrantCluster(qdrant_bin, tmp_path_factory.mktemp("qdrant-cluster")).start()
    yield cluster
    cluster.remove()


@pytest.fixture
def collection_name() -> str:
    return f"docs-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def docs(qdrant_node: QdrantNode, collection_name: str) -> Iterator[str]:
    """A collection of 20,000 points (3 shards, payload index on ``group``) on the session node, dropped after
    the test together with any restored copies named after it."""
    data.create_collection(qdrant_node, collection_name, shard_number=3)
    yield collection_name
    for name in qdrant_node.result("GET", "/collections")["collections"]:
        if name["name"].startswith(collection_name):
            data.drop_collection(qdrant_node, name["name"])


# ----- QBM against the node ---------------------------------------------------------------------------------


@pytest.fixture
def qbm_qdrant(qdrant_node: QdrantNode) -> QdrantNode:
    """The Qdrant node QBM (API and worker) is configured with; a test may override it with its own node."""
    return qdrant_node


@pytest.fixture
def engine_config(redis_url: str, key_prefix: str, qbm_qdrant: QdrantNode, tmp_path: Path,
                  secret_key: str) -> Config:
    return make_engine_config(redis_url, key_prefix, qbm_qdrant.url, tmp_path, secret_key,
                              qdrant_api_key=qbm_qdrant.api_key)


@pytest.fixture
def worker_env(engine_config: Config) -> dict[str, str]:
    """The worker's environment: the same Qdrant, API key, Redis and storage roots as the API's config. A test may
    change ``QBM_QDRANT_URL`` (to go through a proxy) before it starts the worker."""
    return worker_env_for(engine_config)


@pytest.fixture
def app(engine_config: Config):
    return create_app(engine_config)


@pytest.fixture
def client(app) -> CheckedClient:
    """The API's test client; every answer is checked against the OpenAPI document the app serves."""
    app.testing = True
    spec = app.test_client().get("/openapi.json").get_json()
    return CheckedClient(app, SpecChecker(spec))


@pytest.fixture
def throttled_qdrant(qbm_qdrant: QdrantNode, worker_env: dict[str, str]) -> Iterator[ThrottledProxy]:
    """A proxy in front of the node that the worker talks to (the API still talks to the node directly); the
    test sets its rate."""
    proxy = ThrottledProxy("127.0.0.1", qbm_qdrant.http_port).start()
    worker_env["QBM_QDRANT_URL"] = proxy.endpoint
    yield proxy
    proxy.cut()
