"""Following a job: a progress bar with bytes moved, speed and ETA (as restic shows them), redrawn in place on a
terminal and printed once per change otherwise, then the job's outcome in one line a person can act on."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, TextIO

from qbm.client.http import EXIT_API_ERROR, ApiClient, ClientError
from qbm.client.output import human_duration, human_size, seconds_between

TERMINAL = ("completed", "failed", "cancelled")
#: How often the job is asked for (a screen refresh rate, not a synchronisation).
WATCH_EVERY = 0.5
BAR_WIDTH = 30
#: Speed is measured over the samples of the last this many seconds, so it follows changes without jumping.
SPEED_WINDOW = 10.0


class SpeedMeter:
    """Bytes per second over the recent samples of (when seen, bytes moved)."""

    def __init__(self, window: float = SPEED_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, done: int) -> None:
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # a retry started the transfer again
        self.samples.append((at, done))
        while len(self.samples) > 2 and at - self.samples[0][0] > self.window:
            self.samples.popleft()

    def speed(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def progress_line(job: dict[str, Any], speed: float | None = None) -> str:
    filled = job["progress"] * BAR_WIDTH // 100
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    target = job["collection_name"] + (f" shard {job['shard_id']}" if job.get("shard_id") is not None else "")
    line = f"[{bar}] {job['progress']:3d}%  {job['status']:<9}  {job['type']} {target}"
    meta = job.get("metadata") or {}
    done, total = meta.get("bytes_done"), meta.get("bytes_total")
    if isinstance(done, int):
        line += f"  {human_size(done)}" + (f" / {human_size(total)}" if isinstance(total, int) else "")
        if job["status"] == "running" and speed is not None:
            line += f"  {human_size(speed)}/s"
            if isinstance(total, int) and speed > 0:
                line += f"  ETA {human_duration((total - done) / speed)}"
    return line


def outcome(job: dict[str, Any]) -> str:
    """What a completed job left, in one or two lines: for a backup, the id a restore needs."""
    meta = job.get("metadata") or {}
    took = seconds_between(job.get("started_at"), job.get("completed_at"))
    timing = f" in {human_duration(took)}" if took is not None else ""
    if job["type"] in ("backup", "shard_backup"):
        backup_id, storage_id = job.get("snapshot_name"), meta.get("storage_id")
        return (f"backup {backup_id} completed{timing}: {human_size(meta.get('size'))}, sha256 "
                f"{meta.get('sha256')}, in storage {storage_id}\n"
                f"restore it with: qbm restore {backup_id} --storage {storage_id}")
    points = meta.get("restored_points")
    return (f"restore completed{timing}: collection {meta.get('target_collection') or job['collection_name']}"
            + (f" shard {job['shard_id']}" if job.get("shard_id") is not None else "")
            + f" restored from backup {job.get('snapshot_name')}"
            + (f" ({points} points)" if points is not None else ""))


def watch(api: ApiClient, job_id: str, out: TextIO) -> int:
    """Redraw the job's progress bar until it ends; exit 0 when it completed, 1 otherwise (with the reason)."""
    live = out.isatty()
    meter = SpeedMeter()
    last_line, last_state = "", None
    while True:
        try:
            job = api.call("GET", f"/jobs/{job_id}")
        except ClientError:
            if live and last_line:
                print(file=out)  # end the bar's line before the error message
            raise
        meta = job.get("metadata") or {}
        if isinstance(meta.get("bytes_done"), int):
            meter.add(time.monotonic(), meta["bytes_done"])
        line = progress_line(job, meter.speed())
        state = (job["status"], job["progress"], meta.get("bytes_done"))
        if live:
            print("\r" + line.ljust(len(last_line)), end="", file=out, flush=True)
        elif state != last_state:
            print(line, file=out, flush=True)
        last_line, last_state = line, state
        if job["status"] in TERMINAL:
            if live:
                print(file=out)
            if job["status"] == "completed":
                print(outcome(job), file=out)
                return 0
            print(f"job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
                  file=sys.stderr)
            return EXIT_API_ERROR
        time.sleep(WATCH_EVERY)
