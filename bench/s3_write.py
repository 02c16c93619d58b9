"""S3 write path alone: QBM's ``S3Storage.write`` against the way it used to write and against ``fput_object``.

Run: ``.venv/bin/python bench/s3_write.py [--size-mib 1024] [--rounds 3]``

moto's S3 server runs in its own process; a file of ``--size-mib`` is the source. Compared in the same run,
round-robin, each a fresh process per measurement so peak RSS is comparable:

* ``qbm``: ``S3Storage.write`` fed the file in 1 MiB chunks (what a backup hands it: the Qdrant download);
  parts packed into reused buffers, 2 uploading while the next is filled.
* ``before``: the previous implementation, rebuilt here: the same chunk feed (hashing, progress) behind a
  file-like reader returning one chunk per ``read``, given to minio's ``put_object`` (unknown length, 16 MiB
  parts, one at a time) -- which appends each returned chunk to the part with ``bytes +=``.
* ``fput_object``: the minio client's own upload of the file (known length, its default part size, 3 parallel
  part uploads) -- the baseline of the throughput goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, S3_ACCESS, S3_BUCKET, S3_SECRET, MiB, Moto, machine, median  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
way, port, path, access, secret, bucket = sys.argv[2:8]
from shared.adapters.storage.base import ChunkFeed
from shared.adapters.storage.s3 import S3Storage

MiB = 1024 * 1024

def chunks():
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            yield chunk

class OneChunkReader:  # the previous _FeedReader: at most one chunk per read()
    def __init__(self, feed):
        self.feed, self.chunk = feed, b""
    def read(self, size=-1):
        if not self.chunk:
            self.chunk = self.feed.next_chunk() or b""
        out, self.chunk = self.chunk[:size], self.chunk[size:]
        return out

store = S3Storage(f"http://127.0.0.1:{port}", bucket, "us-east-1", access, secret)
started = time.monotonic()
if way == "qbm":
    store.write("k", chunks())
elif way == "before":
    feed = ChunkFeed(chunks(), "k")
    store._client.put_object(bucket, "k", OneChunkReader(feed), length=-1, part_size=16 * MiB,
                             num_parallel_uploads=1)
    feed.result()
else:
    store._client.fput_object(bucket, "k", path)
seconds = time.monotonic() - started
store._client.remove_object(bucket, "k")
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WAYS = ("qbm", "before", "fput_object")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print(machine(), flush=True)
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    moto = Moto.start()
    with tempfile.NamedTemporaryFile(prefix="qbm-bench-s3-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
                                     ) as source:
        block = os.urandom(MiB)
        for i in range(args.size_mib):
            source.write(i.to_bytes(8, "little") + block[8:])
        source.flush()
        try:
            for r in range(args.rounds):
                order = WAYS if r % 2 == 0 else tuple(reversed(WAYS))
                for way in order:
                    out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), way, str(moto.port), source.name,
                                          S3_ACCESS, S3_SECRET, S3_BUCKET], check=True, capture_output=True,
                                         text=True).stdout
                    results[way].append(json.loads(out.strip().splitlines()[-1]))
                print(f"round {r + 1} done", flush=True)
        finally:
            moto.stop()

    print(f"\n{args.size_mib} MiB into moto, {args.rounds} round(s): median seconds [each round], "
          "peak RSS of the process")
    for way in WAYS:
        seconds = [x["seconds"] for x in results[way]]
        rss = max(x["peak_rss_mib"] for x in results[way])
        runs = " ".join(f"{s:.2f}" for s in seconds)
        print(f"  {way:<12} {median(seconds):7.2f} s {args.size_mib / median(seconds):7.1f} MiB/s  [{runs}]  "
              f"peak RSS {rss:.0f} MiB")
    print("\nratios (fput_object s / way s, per round, median)")
    for way in ("qbm", "before"):
        ratios = [f["seconds"] / w["seconds"] for f, w in zip(results["fput_object"], results[way], strict=True)]
        print(f"  {way:<12} {median(ratios):.2f}x  [{' '.join(f'{x:.2f}' for x in ratios)}]")


if __name__ == "__main__":
    main()
