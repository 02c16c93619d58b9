"""Job creation throughput: jobs/s through POST /api/v1/jobs on the production server.

Run: ``.venv/bin/python bench/job_create.py [--seconds 20] [--connections 16] [--api-workers 2 --api-threads 8]``

Starts ``qbm api`` (gunicorn gthread; its real enqueuer hands every job to Dramatiq's Redis queue) against
Redis DB 14 under its own key prefix, then drives it from a second process: ``wrk`` (``apt-get install wrk``)
with a Lua script that POSTs ``{"type": "backup", "collection_name": ...}``, or, without wrk, a small asyncio
client (``--client asyncio``). No worker runs, so every job stays pending and its message queued; the count of
jobs in ``jobs:all`` is checked against the number of 201s. Also printed: the API processes' CPU time per
job, which a busy machine changes far less than the wall-clock rate. Goal: >= 1,000 jobs/s on 2 cores.
Every key written is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, free_port, machine, median, stop_process, wait_port  # noqa: E402

LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"type": "backup", "collection_name": "bench-' .. (n % 100) .. '"}'
  return wrk.format("POST", "/api/v1/jobs", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("WRK_JSON {\\"requests\\": %d, \\"seconds\\": %f, \\"non2xx\\": %d, \\"errors\\": %d, "
    .. "\\"p50_ms\\": %f, \\"p99_ms\\": %f}\\n",
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def start_api(redis_url: str, prefix: str, work: Path, workers: int, threads: int, repo: Path = REPO
              ) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update(QBM_REDIS_URL=redis_url, QBM_KEY_PREFIX=prefix, QBM_API_PORT=str(port), QBM_DATA_DIR=str(work),
               QBM_STORAGE_ROOTS=str(work), QBM_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "qbm.cli", "api", "--workers", str(workers),
                             "--threads", str(threads)], env=env, cwd=repo, start_new_session=True,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def run_wrk(port: int, seconds: int, connections: int, work: Path) -> dict:
    script = work / "post.lua"
    script.write_text(LUA)
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}/api/v1/jobs"],
                         check=True, capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    return json.loads(line.removeprefix("WRK_JSON "))


async def _client(port: int, deadline: float, latencies: list[float], counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.monotonic() < deadline:
            n += 1
            body = json.dumps({"type": "backup", "collection_name": f"bench-{n % 100}"}).encode()
            t0 = time.perf_counter()
            writer.write(b"POST /api/v1/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - t0) * 1000)
            counts["ok" if status == 201 else "non2xx"] += 1
    finally:
        writer.close()


def run_asyncio(port: int, seconds: int, connections: int) -> dict:
    latencies: list[float] = []
    counts = {"ok": 0, "non2xx": 0}

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, deadline, latencies, counts) for _ in range(connections)))

    started = time.monotonic()
    asyncio.run(main())
    latencies.sort()
    return {"requests": len(latencies), "seconds": time.monotonic() - started, "non2xx": counts["non2xx"],
            "errors": 0, "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


def cpu_seconds(pid: int) -> float:
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(r: redis.Redis, prefix: str, proc: subprocess.Popen, port: int, args: argparse.Namespace,
            work: Path) -> dict:
    before_jobs, before_cpu = r.zcard(f"{prefix}jobs:all"), cpu_seconds(proc.pid)
    result = run_wrk(port, args.seconds, args.connections, work) if args.client == "wrk" else \
        run_asyncio(port, args.seconds, args.connections)
    result["created"] = r.zcard(f"{prefix}jobs:all") - before_jobs
    result["ok"] = result["requests"] - result["non2xx"]
    result["rate"] = result["ok"] / result["seconds"]
    result["cpu_ms_per_job"] = (cpu_seconds(proc.pid) - before_cpu) * 1000 / max(result["ok"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--api-threads", type=int, default=8)
    parser.add_argument("--client", choices=["wrk", "asyncio"], default="wrk" if shutil.which("wrk") else "asyncio")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--compare-repo", type=Path, default=None,
                        help="also run the API from this other checkout, alternating with this one round by round "
                             "(before/after comparisons in the same run)")
    args = parser.parse_args()

    print(machine(), flush=True)
    r = redis.Redis.from_url(args.redis_url)
    trees = {"this tree": REPO, **({f"{args.compare_repo}": args.compare_repo} if args.compare_repo else {})}
    prefixes = {name: f"qbmbench:{uuid.uuid4().hex[:8]}:" for name in trees}
    work = Path(tempfile.mkdtemp(prefix="qbm-bench-create-"))
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    try:
        for name, repo in trees.items():
            servers[name] = start_api(args.redis_url, prefixes[name], work / str(len(servers)), args.api_workers,
                                      args.api_threads, repo)
            run_asyncio(servers[name][1], 2, 4)  # warm-up: imports, connection pools, Lua script cache
        for i in range(args.rounds):
            for name in (list(trees) if i % 2 == 0 else list(reversed(trees))):
                proc, port = servers[name]
                results[name].append(measure(r, prefixes[name], proc, port, args, work))
        queued = {name: sum(r.llen(k) for k in r.scan_iter(match=f"{prefixes[name]}dramatiq:*", count=1000)
                            if r.type(k) == b"list") for name in trees}
    finally:
        for proc, _ in servers.values():
            stop_process(proc)
        for prefix in prefixes.values():
            batch = list(r.scan_iter(match=f"{prefix}*", count=10_000))
            for i in range(0, len(batch), 10_000):
                r.unlink(*batch[i:i + 10_000])
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nPOST /api/v1/jobs on qbm api: gunicorn {args.api_workers} worker(s) x {args.api_threads} thread(s); "
          f"client: {args.client}, {args.connections} connections, {args.seconds} s x {args.rounds} round(s)")
    for name, runs in results.items():
        last = runs[-1]
        rate = median([x["rate"] for x in runs])
        cpu = median([x["cpu_ms_per_job"] for x in runs])
        print(f"  {name}:")
        print(f"    201 Created (last round): {last['ok']:,}   other statuses: {last['non2xx']}   "
              f"socket errors: {last['errors']}   jobs stored: {last['created']:,}   "
              f"messages queued (all rounds + warm-up): {queued[name]:,}")
        print(f"    latency (last round) p50 {last['p50_ms']:.1f} ms, p99 {last['p99_ms']:.1f} ms")
        print(f"    API CPU time: {cpu:.2f} ms per job (median; all gunicorn processes)  "
              f"[{' '.join(format(x['cpu_ms_per_job'], '.2f') for x in runs)}]")
        print(f"    throughput: {rate:,.0f} jobs/s (median) [{' '.join(format(x['rate'], '.0f') for x in runs)}]   "
              f"goal >= 1,000: {'met' if rate >= 1000 else 'MISSED'}")


if __name__ == "__main__":
    main()
