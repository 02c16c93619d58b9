"""The backup transfer path alone, against ``curl -o``: where a local backup's time goes, before/after tuning.

Run: ``.venv/bin/python bench/transfer_path.py [--size-mib 1024] [--rounds 9] [--chunks-mib 1 4]``

The Qdrant double runs in its own process and serves one snapshot of ``--size-mib``; this process then, round
after round in alternating order, copies it to /dev/shm (RAM, so the disk's noise stays out) in these ways:

* ``curl -o``: the baseline of throughput goal 1.
* ``requests, no hash``: plain ``requests`` streaming with 4 MiB reads and ``os.write``: the ceiling for
  Python without verification.
* ``QBM, readinto``: what the backup's transfer step runs -- :meth:`QdrantClient.download_snapshot` into
  :meth:`LocalStorage.write` (read into reused buffers, sha256 on a helper thread, temp file, fsync, rename),
  checked against Qdrant's checksum.
* ``QBM, N MiB chunks``: the same, but the download iterated as ``bytes`` chunks (the path before the
  ``readinto`` change), once per ``--chunks-mib`` (1 MiB was the chunk size before the first tuning, 4 MiB
  after).

Each figure is the median of its rounds; ratios (curl s / way s) are taken within each round, then the median.
This machine's memory is slow to touch the first time after it was freed (a VM balloon), which makes single
runs swing by 2x: many short interleaved rounds and medians are what make the comparison fair.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, MiB, machine, median  # noqa: E402
from shared.adapters.qdrant import QdrantClient  # noqa: E402
from shared.adapters.storage.local import LocalStorage  # noqa: E402

_DOUBLE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import requests
from tests.qdrant_double import QdrantDouble
double = QdrantDouble(sys.argv[2])
double.start()
double.create_collection("c", points=1000, size_bytes=int(sys.argv[3]))
snap = requests.post(f"{double.url}/collections/c/snapshots?wait=true").json()["result"]
print(json.dumps({"url": double.url, "name": snap["name"], "checksum": snap["checksum"], "size": snap["size"]}),
      flush=True)
sys.stdin.read()  # serve until the bench closes our stdin
double.stop()
"""


def cpu_seconds() -> float:
    """CPU time of this process (every thread) plus its finished children (curl)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--chunks-mib", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()

    print(machine(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="qbm-bench-path-"))
    out = Path(tempfile.mkdtemp(prefix="qbm-bench-path-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    double = subprocess.Popen([sys.executable, "-c", _DOUBLE, str(REPO), str(work), str(args.size_mib * MiB)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert double.stdout is not None
        snap = json.loads(double.stdout.readline())
        url = f"{snap['url']}/collections/c/snapshots/{snap['name']}"
        qdrant = QdrantClient(snap["url"])
        storage = LocalStorage(out / "store")

        def curl() -> None:
            subprocess.run(["curl", "-sS", "-f", "-o", str(out / "curl"), url], check=True)
            (out / "curl").unlink()

        def plain() -> None:
            with requests.get(url, stream=True) as resp:
                fd = os.open(out / "plain", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                try:
                    for chunk in resp.iter_content(4 * MiB):
                        os.write(fd, chunk)
                finally:
                    os.close(fd)
            (out / "plain").unlink()

        def qbm(chunk_mib: int | None) -> None:
            with qdrant.download_snapshot("c", snap["name"], chunk_size=(chunk_mib or 4) * MiB) as download:
                result = storage.write("c/b/full.snapshot", download if chunk_mib is None else iter(download))
            if result.sha256 != snap["checksum"]:
                raise RuntimeError(f"sha256 mismatch: {result.sha256} != {snap['checksum']}")
            storage.delete("c/b/full.snapshot")

        ways = {"curl -o": curl, "requests, no hash": plain, "QBM, readinto": lambda: qbm(None),
                **{f"QBM, {n} MiB chunks": (lambda n=n: qbm(n)) for n in args.chunks_mib}}
        for way in ways.values():  # warm-up: page cache of the snapshot, connections, first-touch memory
            way()
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for i in range(args.rounds):
            for name in (list(ways) if i % 2 == 0 else list(reversed(ways))):
                started, cpu_before = time.perf_counter(), cpu_seconds()
                ways[name]()
                seconds[name].append(time.perf_counter() - started)
                cpu[name].append(cpu_seconds() - cpu_before)
    finally:
        if double.stdin is not None:
            double.stdin.close()
        double.wait(60)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)

    size = snap["size"] / MiB
    print(f"\n{size:.0f} MiB snapshot to /dev/shm, {args.rounds} rounds: median s, MiB/s, ratio curl s / way s "
          "(median of per-round ratios), median CPU s of the copying side (all its threads, or curl) "
          "[each round's seconds]")
    for name, values in seconds.items():
        ratios = [c / v for c, v in zip(seconds["curl -o"], values, strict=True)]
        print(f"  {name:<20} {median(values):6.2f} s {size / median(values):7.0f} MiB/s  {median(ratios):5.2f}x  "
              f"cpu {median(cpu[name]):5.2f} s  "
              f"[{' '.join(f'{v:.2f}' for v in values)}]")
    hashed = hashlib.sha256()
    block = os.urandom(16 * MiB)
    started = time.perf_counter()
    for _ in range(32):
        hashed.update(block)
    print(f"  (sha256 alone on one core: {512 / (time.perf_counter() - started):.0f} MiB/s -- a ceiling for any "
          "verified copy)")


if __name__ == "__main__":
    main()
