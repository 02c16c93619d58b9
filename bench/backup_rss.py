"""Peak RSS of a worker during backups of a small and a large snapshot, to local storage and to S3.

Run: ``.venv/bin/python bench/backup_rss.py [--sizes-mib 200 2048] [--storage local s3]``

Starts the Qdrant test double in this process (and moto's S3 server in its own process for ``s3``); for each
storage and size a fresh ``qbm worker`` (1 process, 1 thread) runs one backup job while the RSS of every
process of the worker tree is sampled every 20 ms (psutil). A fresh worker per job, because RSS is a
high-water mark: memory an earlier job made the allocator keep (an S3 job's part buffers) would otherwise be
charged to the next. Goal: the worker process peaks at <= 150 MiB, and the large snapshot's peak is within
10 % of the small one's (memory flat in snapshot size). Uses Redis DB 15 under its own key prefix and deletes
only its own keys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import MiB, PeakRss, bench, default_storage_dir, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[200, 2048])
    parser.add_argument("--storage", nargs="+", choices=["local", "s3"], default=["local", "s3"])
    args = parser.parse_args()

    print(machine(), flush=True)
    rows: list[tuple[str, int, float, float, float, float]] = []
    with bench(storage_dir=default_storage_dir(max(args.sizes_mib) * MiB * 2)) as b:
        assert b.double is not None
        ids = {kind: (b.add_local_storage(kind) if kind == "local" else b.add_s3_storage(kind))
               for kind in args.storage}
        for size in args.sizes_mib:
            b.double.create_collection(f"rss{size}", points=1000, size_bytes=size * MiB)
        for kind in args.storage:
            for size in args.sizes_mib:
                worker = b.start_worker(processes=1, threads=1)
                idle = PeakRss(worker.pid)
                idle.sample()  # after start-up, before the job
                with PeakRss(worker.pid) as rss:
                    seconds, job, _ = b.run_job({"type": "backup", "collection_name": f"rss{size}",
                                                 "metadata": {"storage_id": ids[kind]}})
                b.stop_workers()
                real = job["metadata"]["size"] / MiB
                rows.append((kind, size, real, seconds, rss.worker_peak() / MiB, idle.worker_peak() / MiB))
                print(f"{kind} {size} MiB done", flush=True)
                b.empty_storage(kind)

    print(f"\n{'storage':>7} {'size MiB':>9} {'seconds':>8} {'MiB/s':>7} {'worker process RSS MiB: idle':>29} "
          f"{'peak':>6}")
    for kind, _, real, seconds, peak, idle in rows:
        print(f"{kind:>7} {real:9.0f} {seconds:8.2f} {real / seconds:7.1f} {idle:29.1f} {peak:6.1f}")
    print("\ngoal: worker process peak <= 150 MiB, largest within 10 % of smallest")
    for kind in args.storage:
        peaks = [row[4] for row in rows if row[0] == kind]
        spread = max(peaks) / min(peaks) - 1
        ok = max(peaks) <= 150 and spread <= 0.10
        print(f"  {kind}: max {max(peaks):.1f} MiB, largest/smallest {1 + spread:.3f}  {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
