"""Backup sets on a real 3-peer Qdrant cluster: wall time with 1 and 3 worker processes, the speed-up, and the disk
the Qdrant nodes use beyond their data while the backup runs; and, on a single node, the same for a collection
snapshot backup against streaming every shard (the choice single nodes keep).

Run: ``QBM_TEST_QDRANT_BIN=/path/to/qdrant .venv/bin/python bench/cluster_set.py [--points 200000] [--rounds 2]``

The cluster (and the single node) are started from ``QBM_TEST_QDRANT_BIN`` under a temp folder, with the test
suite's fixtures (tests/real_qdrant/qdrant_process.py); the collection has 6 shards, 2 replicas each (1 on the
single node), 128-d vectors. Extra disk is sampled every 50 ms over every node's storage and snapshots folders
(file sizes as allocated on disk) and reported as the peak above what they held before the backup.
Uses Redis DB 15 under its own key prefix, deleted afterwards. Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import MiB, bench, machine, median  # noqa: E402
from tests.real_qdrant import data  # noqa: E402
from tests.real_qdrant.qdrant_process import QdrantCluster, QdrantNode  # noqa: E402

SHARDS, REPLICAS = 6, 2


def disk_used(paths: list[Path]) -> int:
    total = 0
    for root in paths:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass  # a file renamed or removed while we walk
    return total


class DiskPeak:
    """The peak of :func:`disk_used` over ``paths`` while in the ``with`` block, above its value at entry."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, disk_used(self.paths))

    def __enter__(self) -> DiskPeak:
        self.base = self.peak = disk_used(self.paths)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, disk_used(self.paths))

    @property
    def extra(self) -> int:
        return self.peak - self.base


def node_paths(nodes: list[QdrantNode]) -> list[Path]:
    return [p for n in nodes for p in (n.storage_path, n.snapshots_path)]


def run_backups(nodes: list[QdrantNode], processes: list[int], rounds: int, storage_dir: Path) -> list[str]:
    first = nodes[0]
    peers = tuple((n.p2p_uri, n.url) for n in nodes) if len(nodes) > 1 else ()
    lines = []
    with bench(storage_dir=storage_dir, qdrant_url=first.url, qdrant_api_key=first.api_key,
               qdrant_peers=peers) as b:
        storage_id = b.add_local_storage("local")
        walls: dict[int, float] = {}
        for count in processes:
            b.start_worker(processes=count, threads=1)
            seconds, extras, sizes = [], [], []
            for _ in range(rounds):
                with DiskPeak(node_paths(nodes)) as peak:
                    elapsed, job, _steps = b.run_job({"type": "backup", "collection_name": "bench",
                                                      "metadata": {"storage_id": storage_id}})
                seconds.append(elapsed)
                extras.append(peak.extra)
                sizes.append(job["metadata"]["size"])
                b.empty_storage("local")
            b.stop_workers()
            walls[count] = median(seconds)
            kind = "set" if len(nodes) > 1 else "collection snapshot"
            lines.append(f"  {kind:>19} {count:>3} process(es): {median(seconds):7.2f} s "
                         f"[{' '.join(f'{s:.2f}' for s in seconds)}], {sizes[-1] / MiB:7.1f} MiB stored, "
                         f"extra disk on the nodes {max(extras) / MiB:7.1f} MiB")
            print(lines[-1], flush=True)
        if len(walls) > 1:
            base = walls[processes[0]]
            lines.append("  speed-up: " + ", ".join(f"{c} process(es) {base / w:.2f}x" for c, w in walls.items()))
            print(lines[-1], flush=True)
    return lines


def stream_every_shard(node: QdrantNode, shards: int, rounds: int) -> str:
    """Single node: every shard streamed with ``GET /collections/{c}/shards/{id}/snapshot`` (read and dropped)."""
    seconds, extras, total = [], [], 0
    for _ in range(rounds):
        started = time.monotonic()
        with DiskPeak(node_paths([node])) as peak:
            total = 0
            for shard in range(shards):
                with node.session.get(f"{node.url}/collections/bench/shards/{shard}/snapshot", stream=True,
                                      timeout=600) as resp:
                    resp.raise_for_status()
                    for chunk in resp.iter_content(4 * MiB):
                        total += len(chunk)
        seconds.append(time.monotonic() - started)
        extras.append(peak.extra)
    return (f"  {'streamed shards':>19}   (read only): {median(seconds):7.2f} s "
            f"[{' '.join(f'{s:.2f}' for s in seconds)}], {total / MiB:7.1f} MiB streamed, "
            f"extra disk on the node {max(extras) / MiB:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    binary = os.environ.get("QBM_TEST_QDRANT_BIN")
    if not binary:
        sys.exit("set QBM_TEST_QDRANT_BIN to a Qdrant binary")
    print(machine(), flush=True)
    print(f"Qdrant {binary}; {args.points} points of {data.DIM} dimensions, {SHARDS} shards", flush=True)
    work = Path(tempfile.mkdtemp(prefix="qbm-bench-cluster-"))
    storage_dir = Path(tempfile.mkdtemp(prefix="qbm-bench-store-"))

    cluster = QdrantCluster(binary, work / "cluster").start()
    try:
        data.create_collection(cluster.peers[0], "bench", shard_number=SHARDS, replication_factor=REPLICAS,
                               points=args.points)
        data.wait_replicas_active(cluster.peers, "bench", timeout=600)
        print(f"cluster of 3 peers, replication factor {REPLICAS}:", flush=True)
        cluster_lines = run_backups(cluster.peers, args.processes, args.rounds, storage_dir)
    finally:
        cluster.remove()

    node = QdrantNode(binary, work / "single", name="single").start()
    try:
        data.create_collection(node, "bench", shard_number=SHARDS, points=args.points)
        print("single node:", flush=True)
        single_lines = run_backups([node], [1], args.rounds, storage_dir)
        single_lines.append(stream_every_shard(node, SHARDS, args.rounds))
        print(single_lines[-1], flush=True)
    finally:
        node.remove()
    print("\nsummary\n" + "\n".join(cluster_lines + single_lines))


if __name__ == "__main__":
    main()
