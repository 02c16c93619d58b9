"""Backup and restore throughput of QBM against doing the same with plain tools, as ratios from one run.

Run: ``.venv/bin/python bench/throughput.py [--size-mib 2048] [--rounds 4] [--backends local s3]
[--storage-dir DIR] [--no-warmup]``

The Qdrant double serves a collection of ``--size-mib`` from this process; one ``qbm worker`` (1 process,
1 thread) does the jobs; moto's S3 server runs in its own process. A round runs, per backend, QBM's backup and
restore and the tools' backup and restore, one after the other (which goes first alternates between rounds,
and each side deletes what it wrote before the other starts). Ratios are taken within a round, then the
median over rounds is printed. A first round per backend warms up and is not counted (on this VM, memory
touched for the first time in a while is several times slower to fill, so the first copy of 2 GiB pays more):

* backup, local: the job from creation to completion against ``curl -o`` of the same snapshot from the same
  double. The job also makes the snapshot on Qdrant and deletes it afterwards, so it is compared with the same
  calls done by curl (POST snapshot, ``curl -o``, DELETE) -- "manual" -- and its transfer step alone (from the
  worker's log: transfer step start to finalize step start) with ``curl -o`` alone. A job's backup is on disk
  when it ends (fsync); ``curl -o`` leaves its copy in the page cache, so each comparison is printed twice:
  with an fsync of curl's copy right after ``curl -o`` (like for like: both durable) and without.
* backup, S3: the same into moto, against the minio client's ``fput_object`` of the same file (in its own
  process, defaults: 3 parallel part uploads).
* restore, local: the job against ``curl -F snapshot=@file .../snapshots/upload?wait=true&checksum=...``, the
  request QBM makes (Qdrant unpacks and checks the archive in both).
* restore, S3: the job (Qdrant pulls a presigned URL) against ``curl -X PUT .../snapshots/recover`` with a
  presigned URL of the same bytes, plus minio's ``fget_object`` of the object as the raw-copy figure.

A ratio is baseline seconds / QBM seconds: 1.0 means as fast as the plain tool, higher is faster. Backups and
the tools' copies go to ``--storage-dir``: by default the temp dir, on this machine's disk, where a local
backup is meant to end up. ``--storage-dir /dev/shm`` (RAM) takes the disk out: what remains is a contest of
CPU, where QBM must also compute sha256 (~1.4 GB/s on one core here, as fast as curl's whole copy) on two
cores shared with the double serving the bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    S3_ACCESS,
    S3_BUCKET,
    S3_SECRET,
    Bench,
    MiB,
    bench,
    machine,
    median,
    timed,
)

COLLECTION = "tp"

_MINIO_SCRIPT = """
import sys, time
from minio import Minio
op, port, key, path, access, secret, bucket = sys.argv[1:8]
client = Minio(f"127.0.0.1:{port}", access, secret, secure=False, region="us-east-1")
started = time.monotonic()
if op == "put":
    client.fput_object(bucket, key, path)
else:
    client.fget_object(bucket, key, path)
print(time.monotonic() - started)
"""


def curl(*args: str) -> float:
    return timed(["curl", "-sS", "-f", *args], stdout=subprocess.DEVNULL)


def curl_json(*args: str) -> dict:
    out = subprocess.run(["curl", "-sS", "-f", *args], check=True, capture_output=True).stdout
    return json.loads(out)


def minio_tool(op: str, b: Bench, key: str, path: Path) -> float:
    """fput_object / fget_object in a fresh process; the seconds the call itself took (no start-up)."""
    assert b.moto is not None
    out = subprocess.run([sys.executable, "-c", _MINIO_SCRIPT, op, str(b.moto.port), key, str(path), S3_ACCESS,
                          S3_SECRET, S3_BUCKET],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def fsync_file(path: Path) -> float:
    started = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started


def manual_backup(b: Bench, dest: Path, durable: bool) -> dict[str, float]:
    """POST snapshot, curl -o, (fsync of the copy when ``durable``), DELETE: what QBM's backup job does, with
    curl. QBM's local backup is on disk when its job ends (fsync); ``curl -o`` leaves it in the page cache."""
    q = b.double.url  # type: ignore[union-attr]
    started = time.monotonic()
    snap = curl_json("-X", "POST", f"{q}/collections/{COLLECTION}/snapshots?wait=true")["result"]
    created = time.monotonic()
    download = curl("-o", str(dest), f"{q}/collections/{COLLECTION}/snapshots/{snap['name']}")
    synced = fsync_file(dest) if durable else 0.0
    curl("-X", "DELETE", f"{q}/collections/{COLLECTION}/snapshots/{snap['name']}?wait=true")
    total = time.monotonic() - started
    return {"create": created - started, "curl": download, "fsync": synced, "manual": total,
            "sha256": snap["checksum"]}


def qbm_backup(b: Bench, storage: str) -> dict:
    seconds, job, steps = b.run_job({"type": "backup", "collection_name": COLLECTION,
                                     "metadata": {"storage_id": b.storage_ids[storage]}})
    return {"job": seconds, "transfer": steps["transfer"], "backup_id": job["snapshot_name"],
            "meta": job["metadata"]}


def qbm_restore(b: Bench, storage: str, backup_id: str, target: str) -> dict:
    seconds, job, _ = b.run_job({"type": "restore", "collection_name": COLLECTION, "snapshot_name": backup_id,
                                     "metadata": {"storage_id": b.storage_ids[storage],
                                                  "target_collection": target}})
    return {"job": seconds}


def manual_restore_local(b: Bench, path: Path, sha256: str, target: str) -> float:
    q = b.double.url  # type: ignore[union-attr]
    started = time.monotonic()
    curl("-F", f"snapshot=@{path}", f"{q}/collections/{target}/snapshots/upload?wait=true&checksum={sha256}")
    curl("-X", "DELETE", f"{q}/collections/{target}/snapshots/{path.name}?wait=true")
    return time.monotonic() - started


def manual_restore_s3(b: Bench, key: str, sha256: str, target: str) -> float:
    from datetime import timedelta

    assert b.moto is not None
    url = b.moto.client().presigned_get_object(S3_BUCKET, key, expires=timedelta(hours=1))
    body = json.dumps({"location": url, "checksum": sha256})
    q = b.double.url  # type: ignore[union-attr]
    return curl("-X", "PUT", "-H", "Content-Type: application/json", "-d", body,
                f"{q}/collections/{target}/snapshots/recover?wait=true")


def tool_cycle(b: Bench, backend: str, fig: dict[str, float]) -> None:
    """Backup and restore with the plain tools; every file and object it made is gone when it returns."""
    copy = b.root / "curl-copy.snapshot"
    m = manual_backup(b, copy, durable=backend == "local")
    fig[f"{backend} backup: curl -o"] = m["curl"]
    fig[f"{backend} snapshot create (POST wait=true)"] = m["create"]
    if backend == "local":
        fig["local backup: fsync of curl's copy"] = m["fsync"]
        fig["local backup: curl -o + fsync"] = m["curl"] + m["fsync"]
        fig["local backup: curl create+download+fsync+delete"] = m["manual"]
        fig["local backup: curl create+download+delete"] = m["manual"] - m["fsync"]
        fig["local restore: curl -F upload?wait=true"] = manual_restore_local(b, copy, m["sha256"], "tp_tool")
        copy.unlink()
    else:
        fig["s3 backup: curl create+download+delete"] = m["manual"]
        put = minio_tool("put", b, "baseline/copy.snapshot", copy)
        copy.unlink()
        fig["s3 backup: fput_object"] = put
        fig["s3 backup: curl create+download+delete, then fput_object"] = m["manual"] + put
        fig["s3 restore: curl PUT recover (presigned)"] = manual_restore_s3(
            b, "baseline/copy.snapshot", m["sha256"], "tp_tool")
        fetched = b.root / "fget.snapshot"
        fig["s3 restore: fget_object"] = minio_tool("get", b, "baseline/copy.snapshot", fetched)
        fetched.unlink()
        b.moto.client().remove_object(S3_BUCKET, "baseline/copy.snapshot")  # type: ignore[union-attr]
    b.double.drop_collection("tp_tool")  # type: ignore[union-attr]


def qbm_cycle(b: Bench, backend: str, fig: dict[str, float]) -> None:
    """Backup and restore through QBM jobs; every file and object it made is gone when it returns."""
    qbm = qbm_backup(b, backend)
    fig[f"{backend} backup: QBM job"] = qbm["job"]
    fig[f"{backend} backup: QBM transfer step"] = qbm["transfer"]
    fig[f"{backend} restore: QBM job"] = qbm_restore(b, backend, qbm["backup_id"], "tp_qbm")["job"]
    b.double.drop_collection("tp_qbm")  # type: ignore[union-attr]
    b.empty_storage(backend)


def one_round(b: Bench, backend: str, qbm_first: bool) -> dict[str, float]:
    """QBM's backup+restore and the tools' backup+restore, one after the other; seconds by figure name.

    Each side cleans up before the other starts, so both begin with the same memory free (on this VM, memory
    touched for the first time in a while costs ~5x more to fill: see RESULTS.md)."""
    fig: dict[str, float] = {}
    for cycle in ((qbm_cycle, tool_cycle) if qbm_first else (tool_cycle, qbm_cycle)):
        cycle(b, backend, fig)
    return fig


#: (label, baseline figure, QBM figure, goal): ratio = baseline seconds / QBM seconds, per round.
RATIOS = [
    ("1. backup local: job vs curl create+download+fsync+delete", "local backup: curl create+download+fsync+delete",
     "local backup: QBM job", 0.95),
    ("1. backup local: job vs curl create+download+delete (no fsync)", "local backup: curl create+download+delete",
     "local backup: QBM job", 0.95),
    ("1. backup local: transfer step vs curl -o + fsync", "local backup: curl -o + fsync",
     "local backup: QBM transfer step", 0.95),
    ("1. backup local: transfer step vs curl -o (no fsync)", "local backup: curl -o",
     "local backup: QBM transfer step", 0.95),
    ("1. backup local: job vs curl -o alone (literal)", "local backup: curl -o", "local backup: QBM job", 0.95),
    ("2. backup s3: job vs curl create+download+delete, then fput_object",
     "s3 backup: curl create+download+delete, then fput_object", "s3 backup: QBM job", 0.9),
    ("2. backup s3: transfer step vs fput_object", "s3 backup: fput_object", "s3 backup: QBM transfer step", 0.9),
    ("2. backup s3: job vs fput_object alone (literal)", "s3 backup: fput_object", "s3 backup: QBM job", 0.9),
    ("3. restore local: job vs curl -F upload", "local restore: curl -F upload?wait=true", "local restore: QBM job",
     0.9),
    ("3. restore s3: job vs curl PUT recover", "s3 restore: curl PUT recover (presigned)", "s3 restore: QBM job",
     0.9),
    ("3. restore s3: job vs fget_object (raw copy, no Qdrant work)", "s3 restore: fget_object",
     "s3 restore: QBM job", 0.9),
]


def report(rounds: list[dict[str, float]], size_mib: int) -> None:
    names: list[str] = []
    for fig in rounds:
        names += [n for n in fig if n not in names]
    print(f"\nsnapshot {size_mib} MiB, {len(rounds)} round(s); seconds are medians (every round in brackets)")
    width = max(len(n) for n in names)
    for name in names:
        values = [fig[name] for fig in rounds if name in fig]
        runs = " ".join(f"{v:.2f}" for v in values)
        rate = f"{size_mib / median(values):8.1f} MiB/s" if median(values) >= 0.01 else f"{'-':>14}"
        print(f"  {name:<{width}} {median(values):7.2f} s {rate}  [{runs}]")
    print("\nratios: baseline s / QBM s within each round, median over rounds [each round]; goal")
    for label, base, ours, goal in RATIOS:
        per_round = [fig[base] / fig[ours] for fig in rounds if base in fig and ours in fig]
        if not per_round:
            continue
        ratio = median(per_round)
        runs = " ".join(f"{r:.2f}" for r in per_round)
        verdict = "met" if ratio >= goal else "MISSED"
        print(f"  {label:<68} {ratio:5.2f}x [{runs}]  goal >= {goal}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=4, help="even: each side goes first equally often")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the uncounted first round per backend")
    parser.add_argument("--backends", nargs="+", choices=["local", "s3"], default=["local", "s3"])
    parser.add_argument("--storage-dir", type=Path, default=None,
                        help="where backups and the tools' copies are written (default: the temp dir, on disk; "
                             "/dev/shm takes the disk out and leaves a contest of CPU)")
    args = parser.parse_args()

    storage_dir = args.storage_dir
    print(machine(), flush=True)
    print(f"backups and copies written to {storage_dir or 'the temp dir (disk)'}; "
          "Qdrant double data on disk", flush=True)
    rounds: list[dict[str, float]] = []
    with bench(storage_dir=storage_dir) as b:
        assert b.double is not None
        b.double.create_collection(COLLECTION, points=1000, size_bytes=args.size_mib * MiB)
        if "local" in args.backends:
            b.add_local_storage("local")
        if "s3" in args.backends:
            b.add_s3_storage("s3")
        b.start_worker(processes=1, threads=1)
        for backend in args.backends if args.warmup else ():  # page cache, connections, first-touch memory
            one_round(b, backend, qbm_first=True)
            print(f"warm-up {backend} done (not counted)", flush=True)
        for i in range(args.rounds):
            fig: dict[str, float] = {}
            for backend in args.backends:
                fig.update(one_round(b, backend, qbm_first=i % 2 == 1))
                print(f"round {i + 1} {backend} done", flush=True)
            rounds.append(fig)
    report(rounds, args.size_mib)


if __name__ == "__main__":
    main()
