"""Peak RSS of a worker during backups of growing snapshots, and the throughput it reached.

Run: ``.venv/bin/python bench/backup_rss.py [--sizes-mib 200 1024] [--storage local|s3]``

Starts the Qdrant test double in this process, a real ``qbm worker`` (1 process, 1 thread) as a
subprocess, and samples the RSS of every process of the worker tree every 50 ms while one backup job
per size runs. Goal (issue 4 / issue 7): peak RSS of the worker process <= 150 MiB and flat in
snapshot size. Uses Redis DB 15 under its own key prefix and deletes only its own keys.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.app import create_app  # noqa: E402
from shared.config import Config  # noqa: E402
from tests.qdrant_double import QdrantDouble  # noqa: E402

MiB = 1024 * 1024


def sample_peak(root_pid: int, stop: threading.Event, peaks: dict[int, int]) -> None:
    while not stop.is_set():
        try:
            procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        stop.wait(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[200, 1024])
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()

    prefix = f"qbmbench:{uuid.uuid4().hex[:8]}:"
    work = Path(tempfile.mkdtemp(prefix="qbm-bench-"))
    double = QdrantDouble(work / "qdrant")
    double.start()
    moto = None
    root = work / "storage"
    root.mkdir()
    config = Config(redis_url=args.redis_url, redis_url_explicit=True, qdrant_url=double.url,
                    data_dir=work / "data", storage_roots=(root,), key_prefix=prefix)
    client = create_app(config).test_client()
    if args.storage == "local":
        body = {"name": "bench", "type": "local", "path": str(root / "b"), "is_default": True}
    else:
        from minio import Minio
        from moto.server import ThreadedMotoServer

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        Minio(f"{host}:{port}", "a", "b", secure=False).make_bucket("bench")
        body = {"name": "bench", "type": "s3", "s3_endpoint": f"http://{host}:{port}", "s3_bucket": "bench",
                "s3_region": "us-east-1", "s3_access_key": "a", "s3_secret_key": "b", "is_default": True}
    assert client.post("/api/v1/storage", json=body).status_code == 201

    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update(QBM_REDIS_URL=args.redis_url, QBM_KEY_PREFIX=prefix, QBM_QDRANT_URL=double.url,
               QBM_STORAGE_ROOTS=str(root), QBM_DATA_DIR=str(work / "data"), QBM_LOG_LEVEL="WARNING")
    worker = subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--processes", "1", "--threads", "1"],
                              env=env, cwd=REPO, start_new_session=True)
    print(f"storage={args.storage}  machine: {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total // MiB} MiB RAM, python {sys.version.split()[0]}")
    print(f"{'size MiB':>9} {'seconds':>8} {'MiB/s':>8} {'peak RSS worker proc MiB':>25} {'peak RSS all MiB':>17}")
    try:
        for size in args.sizes_mib:
            name = f"bench{size}"
            double.create_collection(name, points=1000, size_bytes=size * MiB)
            time.sleep(1.0)  # let the worker settle after start-up before sampling (not synchronisation)
            peaks: dict[int, int] = {}
            stop = threading.Event()
            sampler = threading.Thread(target=sample_peak, args=(worker.pid, stop, peaks), daemon=True)
            sampler.start()
            started = time.monotonic()
            job = client.post("/api/v1/jobs", json={"type": "backup", "collection_name": name}).get_json()["result"]
            while True:
                status = client.get(f"/api/v1/jobs/{job['id']}").get_json()["result"]
                if status["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            stop.set()
            sampler.join()
            if status["status"] != "completed":
                print(f"job {status['status']}: {status['error']}")
                continue
            real = status["metadata"]["size"] / MiB
            biggest = max(peaks.values()) / MiB
            total = sum(peaks.values()) / MiB
            print(f"{real:9.0f} {elapsed:8.2f} {real / elapsed:8.1f} {biggest:25.1f} {total:17.1f}")
            double.drop_collection(name)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        double.stop()
        if moto:
            moto.stop()
        r = redis.Redis.from_url(args.redis_url)
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)


if __name__ == "__main__":
    main()
