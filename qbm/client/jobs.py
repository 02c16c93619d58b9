"""``qbm jobs list|show|watch|cancel|retry``: the API's /jobs resource."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from qbm.client.http import ApiClient
from qbm.client.output import describe, human_size, table
from qbm.client.progress import watch

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TYPES = ("backup", "restore", "shard_backup", "shard_restore")
#: Shown by ``jobs show`` in their own lines rather than among the metadata.
_OWN_LINES = ("storage_id", "bytes_done", "bytes_total")


def jobs_list(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {"page": args.page, "limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.type:
        params["type"] = args.type
    page = api.call("GET", "/jobs", params=params)
    rows = [[j["id"], j["type"], j["status"], f"{j['progress']}%",
             j["collection_name"] + (f"/{j['shard_id']}" if j.get("shard_id") is not None else ""),
             j["created_at"], j.get("error") or ""] for j in page["items"]]
    table(rows, ["ID", "TYPE", "STATUS", "PROGRESS", "COLLECTION", "CREATED", "ERROR"], out)
    print(f"{len(rows)} of {page['total']} job(s)", file=out)
    return 0


def describe_job(job: dict[str, Any], out: TextIO) -> None:
    meta = dict(job.get("metadata") or {})
    done, total = meta.get("bytes_done"), meta.get("bytes_total")
    moved = None if done is None else human_size(done) + (f" of {human_size(total)}" if total is not None else "")
    describe([
        ("Job", job["id"]),
        ("Type", job["type"]),
        ("Status", job["status"]),
        ("Collection", job["collection_name"]),
        ("Shard", job.get("shard_id")),
        ("Backup", job.get("snapshot_name")),
        ("Storage", meta.get("storage_id")),
        ("Progress", f"{job['progress']}%" + (f" ({moved})" if moved else "")),
        ("Created", job["created_at"]),
        ("Started", job.get("started_at")),
        ("Ended", job.get("completed_at")),
        ("Error", job.get("error")),
        ("Metadata", {k: v for k, v in meta.items() if k not in _OWN_LINES}),
    ], out)


def jobs_show(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    describe_job(api.call("GET", f"/jobs/{args.job_id}"), out)
    return 0


def jobs_cancel(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    job = api.call("POST", f"/jobs/{args.job_id}/cancel")
    print(f"job {job['id']} {job['status']}" + (f": {job['error']}" if job.get("error") else ""), file=out)
    return 0


def jobs_retry(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    job = api.call("POST", f"/jobs/{args.job_id}/retry")
    print(f"job {job['id']} is {job['status']} again; it resumes from its first unfinished step", file=out)
    return watch(api, job["id"], out) if args.watch else 0


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="backup and restore jobs").add_subparsers(dest="action", required=True)
    jlist = jobs.add_parser("list", help="list jobs, newest first (errors shown whole)")
    jlist.add_argument("--status", choices=STATUSES)
    jlist.add_argument("--type", choices=TYPES)
    jlist.add_argument("--page", type=int, default=1)
    jlist.add_argument("--limit", type=int, default=20)
    jlist.set_defaults(handler=jobs_list)
    show = jobs.add_parser("show", aliases=["describe"], help="everything about one job")
    show.add_argument("job_id")
    show.set_defaults(handler=jobs_show)
    jwatch = jobs.add_parser("watch", help="show a live progress bar until the job ends")
    jwatch.add_argument("job_id")
    jwatch.set_defaults(handler=lambda api, args, out: watch(api, args.job_id, out))
    cancel = jobs.add_parser("cancel", help="cancel a pending or running job")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=jobs_cancel)
    retry = jobs.add_parser("retry", help="retry a failed or cancelled job from its first unfinished step")
    retry.add_argument("job_id")
    retry.add_argument("--watch", action="store_true", help="show a progress bar until it ends")
    retry.set_defaults(handler=jobs_retry)
