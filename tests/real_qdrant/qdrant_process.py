"""Real Qdrant processes for tests: one node, or a cluster of peers, each on free loopback ports with its own
storage, snapshots folder, API key and log file.

The binary comes from ``QBM_TEST_QDRANT_BIN`` (nothing of Qdrant lives in this repo). Every wait is on a
condition with a deadline: ``GET /readyz`` answering 200 for a node; for a cluster, every peer's ``GET /cluster``
listing all peers and naming the same Raft leader (what Qdrant's own consensus tests wait for).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import requests

from tests.waiting import wait_until

QDRANT_BIN_ENV = "QBM_TEST_QDRANT_BIN"
SKIP_REASON = "QBM_TEST_QDRANT_BIN is not set: the real-Qdrant tests need a Qdrant binary"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 60


def qdrant_binary() -> str | None:
    return os.environ.get(QDRANT_BIN_ENV) or None


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


#: Every node started and not yet removed, so a failing test's report can show their logs.
LIVE_NODES: list[QdrantNode] = []


class QdrantNode:
    """One ``qdrant`` process. ``stop()`` then ``start()`` brings it back on the same ports and storage."""

    def __init__(self, binary: str, root: Path, *, name: str = "qdrant", api_key: str = "qbm-test-qdrant-key",
                 cluster: bool = False, bootstrap: str | None = None) -> None:
        self.binary = binary
        self.root = root
        self.name = name
        self.api_key = api_key
        self.cluster = cluster
        self.bootstrap = bootstrap
        self.http_port, self.grpc_port, self.p2p_port = free_ports(3)
        self.storage_path = root / "storage"
        self.snapshots_path = root / "snapshots"
        self.log_path = root / "qdrant.log"
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.headers["api-key"] = api_key
        root.mkdir(parents=True, exist_ok=True)

    # ----- addresses ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def p2p_uri(self) -> str:
        return f"http://127.0.0.1:{self.p2p_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QDRANT")}
        env.update({
            "QDRANT__SERVICE__HOST": "127.0.0.1",
            "QDRANT__SERVICE__HTTP_PORT": str(self.http_port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
            "QDRANT__SERVICE__API_KEY": self.api_key,
            "QDRANT__TELEMETRY_DISABLED": "true",
            "QDRANT__STORAGE__STORAGE_PATH": str(self.storage_path),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.snapshots_path),
            "QDRANT__LOG_LEVEL": "INFO",
        })
        if self.cluster:
            env["QDRANT__CLUSTER__ENABLED"] = "true"
            env["QDRANT__CLUSTER__P2P__PORT"] = str(self.p2p_port)
        return env

    def command(self) -> list[str]:
        args = [self.binary]
        if self.cluster:
            if self.bootstrap:
                args += ["--bootstrap", self.bootstrap]
            args += ["--uri", self.p2p_uri]
        return args

    # ----- life cycle -----------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> QdrantNode:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {' '.join(self.command())} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), env=self.env(), cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        if self not in LIVE_NODES:
            LIVE_NODES.append(self)
        if wait:
            self.wait_ready()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _probe(self, path: str) -> requests.Response | None:
        if not self.running():
            raise AssertionError(f"{self.name} exited with status {self.proc.returncode if self.proc else None}"
                                 f"\n{self.log_tail()}")
        try:
            return self.session.get(self.url + path, timeout=2)
        except requests.RequestException:
            return None

    def ready(self) -> bool:
        resp = self._probe("/readyz")
        return resp is not None and resp.status_code == 200

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(self.ready, timeout, f"{self.name} GET /readyz to answer 200", details=self.log_tail,
                   interval=0.1)

    def signal_stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the process to exit; SIGKILL it when it has not after ``timeout`` seconds."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self.signal_stop()
        self.wait_stopped(timeout)

    def remove(self) -> None:
        """Stop, and delete the storage and snapshots (the log stays next to them in the test's tmp dir)."""
        self.stop()
        self.session.close()
        for path in (self.storage_path, self.snapshots_path):
            shutil.rmtree(path, ignore_errors=True)
        if self in LIVE_NODES:
            LIVE_NODES.remove(self)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"({self.name}: no log at {self.log_path})"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    # ----- raw HTTP (with the API key) -------------------------------------------------------------------

    def request(self, method: str, path: str, *, expect: int | tuple[int, ...] | None = 200,
                timeout: float = 60, **kwargs: Any) -> requests.Response:
        resp = self.session.request(method, self.url + path, timeout=timeout, **kwargs)
        allowed = (expect,) if isinstance(expect, int) else expect
        if allowed is not None and resp.status_code not in allowed:
            raise AssertionError(f"{self.name}: {method} {path} answered {resp.status_code}: {resp.text[:500]}")
        return resp

    def get(self, path: str, **kwargs: Any) -> Any:
        """The JSON body of a GET (asserting 200)."""
        return self.request("GET", path, **kwargs).json()

    def result(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()["result"]

    def peer_id(self) -> int:
        return int(self.result("GET", "/cluster")["peer_id"])


class QdrantCluster:
    """Peers started the way Qdrant's consensus tests start them: the first with ``--uri``, the others with
    ``--bootstrap <first's p2p URI> --uri <own>``, all with ``QDRANT__CLUSTER__ENABLED=true``."""

    def __init__(self, binary: str, root: Path, size: int = 3, api_key: str = "qbm-test-qdrant-key") -> None:
        first = QdrantNode(binary, root / "peer0", name="peer0", api_key=api_key, cluster=True)
        self.peers = [first] + [
            QdrantNode(binary, root / f"peer{i}", name=f"peer{i}", api_key=api_key, cluster=True,
                       bootstrap=first.p2p_uri)
            for i in range(1, size)
        ]
        self.api_key = api_key

    def start(self) -> QdrantCluster:
        first = self.peers[0]
        first.start(wait=False)
        wait_until(lambda: self._leader_on(first, 1), START_TIMEOUT, "the first peer to elect itself leader",
                   details=first.log_tail, interval=0.1)
        for peer in self.peers[1:]:
            peer.start(wait=False)
        self.wait_uniform()
        for peer in self.peers:
            peer.wait_ready()
        return self

    def _leader_on(self, peer: QdrantNode, size: int) -> int | None:
        resp = peer._probe("/cluster")
        if resp is None or resp.status_code != 200:
            return None
        result = resp.json()["result"]
        if len(result.get("peers") or {}) != size:
            return None
        return (result.get("raft_info") or {}).get("leader")

    def wait_uniform(self, timeout: float = START_TIMEOUT) -> int:
        """Every peer lists all peers and names the same leader; returns the leader's peer id."""
        def uniform() -> int | None:
            leaders = {self._leader_on(peer, len(self.peers)) for peer in self.peers}
            return leaders.pop() if len(leaders) == 1 and None not in leaders else None

        return wait_until(uniform, timeout, "every peer to list all peers and the same leader",
                          details=self.log_tails, interval=0.1)

    def log_tails(self) -> str:
        return "\n".join(peer.log_tail() for peer in self.peers)

    def remove(self) -> None:
        for peer in self.peers:  # all at once: peers in cluster mode may need the SIGKILL after the deadline
            peer.signal_stop()
        for peer in self.peers:
            peer.wait_stopped()
        for peer in self.peers:
            peer.remove()
