"""Scale-out: wall time of 8 concurrent backups of 256 MiB with 1, 2 and 4 worker processes.

Run: ``.venv/bin/python bench/scale_out.py [--jobs 8] [--size-mib 256] [--processes 1 2 4] [--storage local]``

Eight collections of ``--size-mib`` live in the Qdrant double (this process); for each worker count a fresh
``qbm worker --processes N --threads 1`` starts, the eight backup jobs are created at once through the API and
the wall time runs from the first creation to the last completion. One collection per job: QBM runs at most
one job per collection at a time, so eight jobs on one collection would be serialised by design. Backups go to
/dev/shm when it has room (see throughput.py). Uses Redis DB 15 under its own key prefix, deleted afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import MiB, bench, default_storage_dir, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    args = parser.parse_args()

    print(machine(), flush=True)
    results: list[tuple[int, float]] = []
    with bench(storage_dir=default_storage_dir(args.jobs * args.size_mib * MiB)) as b:
        assert b.double is not None
        storage_id = b.add_local_storage("local") if args.storage == "local" else b.add_s3_storage("s3")
        names = [f"scale{i}" for i in range(args.jobs)]
        for name in names:
            b.double.create_collection(name, points=1000, size_bytes=args.size_mib * MiB)
        for processes in args.processes:
            b.start_worker(processes=processes, threads=args.threads)
            started = time.monotonic()
            job_ids = [b.create_job({"type": "backup", "collection_name": name,
                                     "metadata": {"storage_id": storage_id}}) for name in names]
            for job_id in job_ids:
                job = b.wait_job(job_id)
                if job["status"] != "completed":
                    raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
            wall = time.monotonic() - started
            b.stop_workers()
            results.append((processes, wall))
            print(f"{processes} process(es): {wall:.2f} s", flush=True)
            b.empty_storage(args.storage)

    total = args.jobs * args.size_mib
    base = results[0][1]
    print(f"\n{args.jobs} concurrent backups of {args.size_mib} MiB ({total} MiB) to {args.storage} storage, "
          f"worker processes x {args.threads} thread(s)")
    print(f"  {'processes':>9} {'wall s':>8} {'MiB/s':>8} {'speed-up':>9}")
    for processes, wall in results:
        print(f"  {processes:>9} {wall:8.2f} {total / wall:8.1f} {base / wall:8.2f}x")


if __name__ == "__main__":
    main()
