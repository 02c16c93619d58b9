"""``qbm`` commands for people at a terminal: talk to a running QBM API over HTTP.

``qbm backup now COLLECTION``, ``qbm backups list``, ``qbm jobs list``, ``qbm jobs watch ID``. They need no
server configuration and no Redis -- only ``QBM_API_URL`` (default ``http://127.0.0.1:8080``) and, when the
API has keys, ``QBM_API_KEY``. Every failure is one line on stderr: exit status 4 when the API cannot be
reached, 1 when it answered with an error (its own message is shown), so scripts can tell the two apart.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any, TextIO

import requests

DEFAULT_API_URL = "http://127.0.0.1:8080"
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 4
TERMINAL = ("completed", "failed", "cancelled")
#: How often ``jobs watch`` asks for the job (a screen refresh rate, not a synchronisation).
WATCH_EVERY = 0.5
BAR_WIDTH = 30


class ClientError(Exception):
    def __init__(self, message: str, code: int = EXIT_API_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _reason(exc: requests.RequestException) -> str:
    """The useful part of urllib3's long error text: "Connection refused", "timed out"..."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found.group(1).strip()
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return "not a valid URL"
    return type(exc).__name__


class ApiClient:
    """Plain ``requests`` against the API, unwrapping the ``{status, time, result}`` envelope."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 10.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base}/api/v1{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach the QBM API at {self.base} ({_reason(exc)}); is it running? "
                              "Set QBM_API_URL to its address", EXIT_UNREACHABLE) from None
        try:
            body = response.json()
        except ValueError:
            raise ClientError(f"the API at {self.base} answered {response.status_code} with something that is "
                              "not JSON; is QBM_API_URL the QBM API?") from None
        if response.status_code >= 400:
            status = body.get("status") if isinstance(body, dict) else None
            message = status.get("error") if isinstance(status, dict) else None
            raise ClientError(f"API error {response.status_code}: {message or response.reason}")
        if isinstance(body, dict) and body.get("status") == "ok" and "result" in body:
            return body["result"]
        return body  # GET /jobs answers its page bare


# --- output helpers -----------------------------------------------------------------------------------


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip(), file=out)


def progress_line(job: dict[str, Any]) -> str:
    filled = job["progress"] * BAR_WIDTH // 100
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    target = job["collection_name"] + (f" shard {job['shard_id']}" if job.get("shard_id") is not None else "")
    return f"[{bar}] {job['progress']:3d}%  {job['status']:<9}  {job['type']} {target}"


# --- commands -----------------------------------------------------------------------------------------


def backup_now(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"type": "backup" if args.shard is None else "shard_backup",
                            "collection_name": args.collection}
    if args.shard is not None:
        body["shard_id"] = args.shard
    if args.storage:
        body["metadata"] = {"storage_id": args.storage}
    job = api.call("POST", "/jobs", json=body)
    print(f"job {job['id']} created: {job['type']} of {job['collection_name']} "
          f"to storage {job['metadata'].get('storage_id')}", file=out)
    if args.watch:
        return watch(api, job["id"], out)
    return 0


def backups_list(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    params = {"page": args.page, "limit": args.limit}
    if args.storage:
        params["storage_id"] = args.storage
    if args.collection:
        params["collection"] = args.collection
    page = api.call("GET", "/backups", params=params)
    rows = [[b["backup_id"], b["collection"], "-" if b["shard_id"] is None else str(b["shard_id"]),
             human_size(b["size"]), b["created_at"]] for b in page["items"]]
    table(rows, ["BACKUP ID", "COLLECTION", "SHARD", "SIZE", "CREATED"], out)
    print(f"{len(rows)} of {page['total']} backup(s)" + (f" in storage {page['items'][0]['storage_id']}"
                                                         if rows else ""), file=out)
    return 0


def jobs_list(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {"page": args.page, "limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.type:
        params["type"] = args.type
    page = api.call("GET", "/jobs", params=params)
    rows = [[j["id"], j["type"], j["status"], f"{j['progress']}%",
             j["collection_name"] + (f"/{j['shard_id']}" if j.get("shard_id") is not None else ""),
             j["created_at"], (j.get("error") or "")[:60]] for j in page["items"]]
    table(rows, ["ID", "TYPE", "STATUS", "PROGRESS", "COLLECTION", "CREATED", "ERROR"], out)
    print(f"{len(rows)} of {page['total']} job(s)", file=out)
    return 0


def watch(api: ApiClient, job_id: str, out: TextIO) -> int:
    """Redraw the job's progress bar until it ends; exit 0 when it completed, 1 otherwise."""
    live = out.isatty()
    last = ""
    while True:
        try:
            job = api.call("GET", f"/jobs/{job_id}")
        except ClientError:
            if live and last:
                print(file=out)  # end the bar's line before the error message
            raise
        line = progress_line(job)
        if live:
            print("\r" + line.ljust(len(last)), end="", file=out, flush=True)
        elif line != last:
            print(line, file=out, flush=True)
        last = line
        if job["status"] in TERMINAL:
            if live:
                print(file=out)
            if job["status"] == "completed":
                return 0
            print(f"job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
                  file=sys.stderr)
            return EXIT_API_ERROR
        time.sleep(WATCH_EVERY)


# --- wiring into ``qbm`` --------------------------------------------------------------------------------

CLIENT_COMMANDS = ("backup", "backups", "jobs")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the client subcommands to ``qbm``'s parser."""
    backup = sub.add_parser("backup", help="start a backup through the API").add_subparsers(dest="action",
                                                                                             required=True)
    now = backup.add_parser("now", help="back up a collection now")
    now.add_argument("collection")
    now.add_argument("--storage", help="storage backend id (default: the default backend)")
    now.add_argument("--shard", type=int, help="back up only this shard")
    now.add_argument("--watch", action="store_true", help="show a progress bar until the backup ends")

    backups = sub.add_parser("backups", help="the backups in storage").add_subparsers(dest="action", required=True)
    blist = backups.add_parser("list", help="list backups, newest first")
    blist.add_argument("--storage", help="storage backend id (default: the default backend)")
    blist.add_argument("--collection")
    blist.add_argument("--page", type=int, default=1)
    blist.add_argument("--limit", type=int, default=20)

    jobs = sub.add_parser("jobs", help="backup and restore jobs").add_subparsers(dest="action", required=True)
    jlist = jobs.add_parser("list", help="list jobs, newest first")
    jlist.add_argument("--status", choices=("pending", "running", "completed", "failed", "cancelled"))
    jlist.add_argument("--type", choices=("backup", "restore", "shard_backup", "shard_restore"))
    jlist.add_argument("--page", type=int, default=1)
    jlist.add_argument("--limit", type=int, default=20)
    jwatch = jobs.add_parser("watch", help="show a live progress bar until the job ends")
    jwatch.add_argument("job_id")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    api = ApiClient(os.environ.get("QBM_API_URL") or DEFAULT_API_URL, os.environ.get("QBM_API_KEY") or None)
    commands = {
        ("backup", "now"): lambda: backup_now(api, args, out),
        ("backups", "list"): lambda: backups_list(api, args, out),
        ("jobs", "list"): lambda: jobs_list(api, args, out),
        ("jobs", "watch"): lambda: watch(api, args.job_id, out),
    }
    try:
        return commands[(args.command, args.action)]()
    except ClientError as exc:
        print(f"qbm: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
