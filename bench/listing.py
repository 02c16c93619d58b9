"""Job listing latency with 1,000 and with 1,000,000 jobs in Redis: p50/p99 and the 1M / 1k ratio.

Run: ``.venv/bin/python bench/listing.py [--jobs-small 1000] [--jobs-large 1000000] [--requests 2000]``

Two job sets live side by side under two key prefixes in Redis DB 14 (not 15, where the tests SCAN:
a million extra keys would slow them down); each is served by its own production API (``qbm api``:
gunicorn, 2 workers x 8 threads). The sets are written straight into the job store's layout
(:mod:`shared.records.job_store`: one hash per job plus the ``jobs:all``, ``jobs:status:{s}``, ``jobs:type:{t}`` and
``jobs:st:{s}:{t}`` sorted sets, scored by creation microseconds) with pipelines, not through the API.

One client sends ``GET /api/v1/jobs?status=completed&page=P`` (limit 20: the default) over a keep-alive
connection, alternating small/large and page 1/500 request by request, so a noisy moment hits both sets
alike. Goal: p99 (1M) / p99 (1k) <= 1.5. With 1,000 jobs page 500 is past the end: an empty page whose
total is still counted. Every key written is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, free_port, machine, stop_process, wait_port  # noqa: E402

BATCH = 10_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def fill(r: redis.Redis, prefix: str, n: int) -> dict[str, int]:
    """Write ``n`` jobs (95 % completed, 5 % failed; 90 % backups, 10 % restores) in the job store's format.

    Creation times are one second apart, ending now. Returns how many jobs each index received.
    """
    now_us = time.time_ns() // 1000
    counts: dict[str, int] = {}
    written = 0
    while written < n:
        size = min(BATCH, n - written)
        pipe = r.pipeline(transaction=False)
        indexes: dict[str, dict[str, int]] = {}
        for i in range(written, written + size):
            micros = now_us - (n - i) * 1_000_000
            job_id = f"{micros:016x}{secrets.token_hex(5)}"
            jtype = "restore" if i % 10 == 9 else "backup"
            status = "failed" if i % 20 == 7 else "completed"
            iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(micros / 1e6))
            fields = {
                "id": job_id, "type": jtype, "status": status, "collection_name": f"collection-{i % 50}",
                "snapshot_name": f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(micros / 1e6))}-{job_id[-8:]}",
                "progress": "100" if status == "completed" else "40",
                "metadata": json.dumps({"storage_id": "st_bench00000000", "key": f"collection-{i % 50}/x/"
                                        "collection.snapshot", "size": 123456789, "sha256": "ab" * 32}),
                "created_at": iso, "started_at": iso, "completed_at": iso, "_created_us": str(micros),
            }
            if status == "failed":
                fields["error"] = "Qdrant answered 503 six times; gave up"
            pipe.hset(f"{prefix}job:{job_id}", mapping=fields)
            for index in ("jobs:all", f"jobs:status:{status}", f"jobs:type:{jtype}", f"jobs:st:{status}:{jtype}"):
                indexes.setdefault(index, {})[job_id] = micros
        for index, members in indexes.items():
            pipe.zadd(f"{prefix}{index}", members)
            counts[index] = counts.get(index, 0) + len(members)
        pipe.execute()
        written += size
    return counts


def delete_prefix(r: redis.Redis, prefix: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{prefix}*", count=10_000):
        batch.append(key)
        if len(batch) >= BATCH:
            deleted += r.unlink(*batch)
            batch.clear()
    if batch:
        deleted += r.unlink(*batch)
    return deleted


def start_api(redis_url: str, prefix: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update(QBM_REDIS_URL=redis_url, QBM_KEY_PREFIX=prefix, QBM_API_PORT=str(port), QBM_DATA_DIR=str(work),
               QBM_STORAGE_ROOTS=str(work), QBM_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "qbm.cli", "api", "--workers", "2", "--threads", "8"],
                            env=env, cwd=REPO, start_new_session=True, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-small", type=int, default=1_000)
    parser.add_argument("--jobs-large", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="per (job set, page)")
    parser.add_argument("--pages", type=int, nargs="+", default=[1, 500])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    print(machine(), flush=True)
    r = redis.Redis.from_url(args.redis_url)
    run = uuid.uuid4().hex[:8]
    sets = {"1k": (f"qbmbench:{run}:small:", args.jobs_small), "1M": (f"qbmbench:{run}:large:", args.jobs_large)}
    work = Path(tempfile.mkdtemp(prefix="qbm-bench-listing-"))
    procs: list[subprocess.Popen] = []
    latencies: dict[tuple[str, int], list[float]] = {}
    try:
        for label, (prefix, n) in sets.items():
            started = time.monotonic()
            counts = fill(r, prefix, n)
            print(f"{label}: wrote {n:,} jobs in {time.monotonic() - started:.1f} s "
                  f"({counts.get('jobs:status:completed', 0):,} completed)", flush=True)
        used = r.info("memory")["used_memory"] / 2**20
        print(f"redis used_memory with both sets: {used:,.0f} MiB", flush=True)
        urls: dict[str, str] = {}
        for label, (prefix, _) in sets.items():
            proc, urls[label] = start_api(args.redis_url, prefix, work / label)
            procs.append(proc)
        session = requests.Session()
        expected = {label: r.zcard(f"{prefix}jobs:status:completed") for label, (prefix, _) in sets.items()}
        order = [(label, page) for page in args.pages for label in sets]
        for label, page in order:  # warm-up: connections, gunicorn threads, Lua script cache
            for _ in range(50):
                session.get(f"{urls[label]}/api/v1/jobs", params={"status": "completed", "page": page})
        for _ in range(args.requests):
            for label, page in order:
                t0 = time.perf_counter()
                resp = session.get(f"{urls[label]}/api/v1/jobs", params={"status": "completed", "page": page})
                elapsed = time.perf_counter() - t0
                body = resp.json()
                if resp.status_code != 200 or body["total"] != expected[label]:
                    raise RuntimeError(f"unexpected answer from the {label} API: {resp.status_code} {body}")
                latencies.setdefault((label, page), []).append(elapsed * 1000)
    finally:
        for proc in procs:
            stop_process(proc)
        for prefix, _ in sets.values():
            delete_prefix(r, prefix)
        subprocess.run(["rm", "-rf", str(work)], check=False)

    print(f"\nGET /api/v1/jobs?status=completed&page=P (limit 20), {args.requests} requests each, ms")
    print(f"  {'jobs':>4} {'page':>5} {'items':>5} {'p50':>7} {'p99':>7} {'max':>7}")
    for (label, page), values in latencies.items():
        items = min(20, max(0, expected[label] - (page - 1) * 20))
        print(f"  {label:>4} {page:>5} {items:>5} {percentile(values, 50):7.2f} {percentile(values, 99):7.2f} "
              f"{max(values):7.2f}")
    print("\nratio 1M / 1k (goal: p99 ratio <= 1.5)")
    for page in args.pages:
        small, large = latencies[("1k", page)], latencies[("1M", page)]
        p50 = percentile(large, 50) / percentile(small, 50)
        p99 = percentile(large, 99) / percentile(small, 99)
        print(f"  page {page:>3}: p50 {p50:.2f}x, p99 {p99:.2f}x  {'met' if p99 <= 1.5 else 'MISSED'}")
    deep, first = max(args.pages), min(args.pages)
    if deep != first and expected["1k"] < deep * 20:
        small, large = latencies[("1k", first)], latencies[("1M", deep)]
        print(f"  page {deep} of 1M vs page {first} of 1k (both 20 jobs, so the same work): "
              f"p50 {percentile(large, 50) / percentile(small, 50):.2f}x, "
              f"p99 {percentile(large, 99) / percentile(small, 99):.2f}x")


if __name__ == "__main__":
    main()
