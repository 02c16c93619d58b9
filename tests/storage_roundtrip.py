"""Stream a large generated object through a storage backend and back, in a child process.

Run in its own process so its peak RSS measures our streaming code alone: in the test process moto's S3
server (a thread) keeps every uploaded byte in memory and would hide whether *we* buffered the whole thing.

    python -m tests.storage_roundtrip '{"backend": {...}, "key": "...", "mib": 200, "tail": 12345}'

prints one JSON line: size, sha256 computed independently while generating, the WriteResult, the sha256 of
what a streaming read got back, and RSS figures in MiB. With ``"max_read": N`` the chunks are handed over as a
readable source (the way a snapshot download is) that gives at most N bytes per read.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate(mib: int, tail: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """1 MiB chunks, each distinct (index in its first bytes): reordered or repeated parts change the hash."""
    block = os.urandom(1024 * 1024)
    for index in range(mib):
        chunk = index.to_bytes(8, "big") + block[8:]
        digest.update(chunk)
        yield chunk
    if tail:
        chunk = block[:tail]
        digest.update(chunk)
        yield chunk


class ChunkReader:
    """A :class:`shared.adapters.storage.base.Readable` over chunks, giving at most ``max_read`` bytes per call (a short
    read, as a socket may): a backend must take any count, and must not keep a chunk past the next read."""

    def __init__(self, chunks: Iterator[bytes], max_read: int) -> None:
        self._chunks = chunks
        self._max_read = max_read
        self._rest = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        count = min(len(buffer), len(self._rest), self._max_read)
        buffer[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count


def main(spec: dict) -> dict:
    from shared.adapters.storage import LocalStorage, S3Storage

    backend = spec["backend"]
    if backend["type"] == "local":
        storage = LocalStorage(backend["root"])
    else:
        storage = S3Storage(backend["endpoint"], backend["bucket"], backend["region"], backend["access_key"],
                            backend["secret_key"])
    baseline = _maxrss_mib()
    expected = hashlib.sha256()
    progress: list[int] = []
    source = generate(spec["mib"], spec["tail"], expected)
    if spec.get("max_read"):
        source = ChunkReader(source, spec["max_read"])
    result = storage.write(spec["key"], source, on_progress=progress.append)
    after_write = _maxrss_mib()
    readback = hashlib.sha256()
    read_size = 0
    with storage.open(spec["key"]) as reader:
        while chunk := reader.read(1024 * 1024):
            readback.update(chunk)
            read_size += len(chunk)
    return {
        "expected_size": spec["mib"] * 1024 * 1024 + spec["tail"],
        "expected_sha256": expected.hexdigest(),
        "written_size": result.size,
        "written_sha256": result.sha256,
        "read_size": read_size,
        "read_sha256": readback.hexdigest(),
        "stat_size": storage.stat(spec["key"]).size,
        "last_progress": progress[-1] if progress else None,
        "progress_calls": len(progress),
        "baseline_rss_mib": baseline,
        "write_peak_rss_mib": after_write,
        "peak_rss_mib": _maxrss_mib(),
    }


def run_in_child(spec: dict) -> dict:
    """Run :func:`main` in a fresh interpreter and return its report."""
    proc = subprocess.run([sys.executable, "-m", "tests.storage_roundtrip", json.dumps(spec)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"round trip failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
