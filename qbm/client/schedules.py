"""``qbm schedules list|show|create|delete|run|enable|disable``: the API's /schedules resource."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from qbm.client.http import EXIT_API_ERROR, ApiClient
from qbm.client.output import describe, show, table
from qbm.client.progress import watch


def _when(schedule: dict[str, Any]) -> str:
    if schedule.get("cron"):
        return f"{schedule['cron']} ({schedule['timezone']})"
    return f"every {schedule['interval_seconds']}s"


def _retention(schedule: dict[str, Any]) -> str:
    rules = schedule.get("retention") or {}
    parts = [f"keep last {rules['keep_last']}" if rules.get("keep_last") else "",
             f"max {rules['max_age_days']:g} days" if rules.get("max_age_days") else ""]
    return ", ".join(p for p in parts if p) or "-"


def _last_run(schedule: dict[str, Any]) -> str:
    run = schedule.get("last_run")
    return f"{run['status']} {run['at']}" if run else "-"


def schedules_list(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    items = api.call("GET", "/schedules")
    rows = [[s["id"], s["name"], "yes" if s["enabled"] else "no", s["type"], ",".join(s["collections"]),
             _when(s), _retention(s), s.get("next_run_time") or "-", _last_run(s)] for s in items]
    table(rows, ["ID", "NAME", "ENABLED", "TYPE", "COLLECTIONS", "WHEN", "RETENTION", "NEXT RUN", "LAST RUN"], out)
    print(f"{len(rows)} schedule(s)", file=out)
    return 0


def describe_schedule(schedule: dict[str, Any], out: TextIO) -> None:
    run = schedule.get("last_run")
    describe([
        ("Schedule", schedule["id"]),
        ("Name", schedule["name"]),
        ("Enabled", schedule["enabled"]),
        ("When", _when(schedule)),
        ("Type", schedule["type"]),
        ("Collections", schedule["collections"]),
        ("Storage", schedule.get("storage_id") or "the default backend"),
        ("Retention", _retention(schedule) + ("  (only backups this schedule made; never pinned ones)"
                                              if schedule.get("retention") else "")),
        ("Next run", schedule.get("next_run_time")),
        ("Last run", None if run is None else
         f"{run['status']} at {run['at']}" + (" (run by hand)" if run.get("manual") else "")),
        ("Last jobs", None if run is None else run["job_ids"]),
        ("Last error", None if run is None else run.get("error")),
        ("Created", schedule["created_at"]),
        ("Updated", schedule["updated_at"]),
    ], out)


def schedules_show(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    describe_schedule(api.call("GET", f"/schedules/{args.schedule_id}"), out)
    return 0


def schedules_create(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"name": args.name, "collections": args.collection, "type": args.type,
                            "timezone": args.timezone, "enabled": not args.disabled}
    if args.cron is not None:
        body["cron"] = args.cron
    else:
        body["interval_seconds"] = args.every
    if args.storage:
        body["storage_id"] = args.storage
    if args.keep_last is not None or args.max_age_days is not None:
        body["retention"] = {"keep_last": args.keep_last, "max_age_days": args.max_age_days}
    schedule = api.call("POST", "/schedules", json=body)
    print(f"schedule {schedule['id']} created: {schedule['name']}, {_when(schedule)}, next run "
          f"{show(schedule.get('next_run_time'))}", file=out)
    return 0


def schedules_delete(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    api.call("DELETE", f"/schedules/{args.schedule_id}")
    print(f"schedule {args.schedule_id} deleted (its backups stay)", file=out)
    return 0


def schedules_run(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    run = api.call("POST", f"/schedules/{args.schedule_id}/run")
    if run["status"] == "failed":  # the run could not create (all of) its jobs
        print(f"qbm: schedule {args.schedule_id} run failed: {run.get('error') or 'see its last_run'}; "
              f"job(s) created: {show(run['job_ids'])}", file=sys.stderr)
        return EXIT_API_ERROR
    print(f"schedule {args.schedule_id} run: {run['status']}, job(s) {show(run['job_ids'])}", file=out)
    code = 0
    if args.watch:
        for job_id in run["job_ids"]:
            code = max(code, watch(api, job_id, out))
    return code


def schedules_enable(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    enabled = args.action == "enable"
    schedule = api.call("PUT", f"/schedules/{args.schedule_id}", json={"enabled": enabled})
    state = f"enabled, next run {show(schedule.get('next_run_time'))}" if enabled else "disabled"
    print(f"schedule {schedule['id']} {state}", file=out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    schedules = sub.add_parser("schedules", help="recurring backups and their retention").add_subparsers(
        dest="action", required=True)
    slist = schedules.add_parser("list", aliases=["get"], help="every schedule")
    slist.set_defaults(handler=schedules_list)
    create = schedules.add_parser("create", help="a new schedule")
    create.add_argument("name")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5-field crontab expression, e.g. '30 2 * * *'")
    when.add_argument("--every", type=int, metavar="SECONDS", help="run every N seconds (at least 10)")
    create.add_argument("--timezone", default="UTC", help="IANA time zone of --cron (default UTC)")
    create.add_argument("--collection", action="append", required=True,
                        help="a collection to back up (repeat for more; '*' for every collection at each run)")
    create.add_argument("--type", choices=("backup", "shard_backup"), default="backup")
    create.add_argument("--storage", help="storage backend id (default: the default backend)")
    create.add_argument("--keep-last", type=int, help="retention: keep this schedule's newest N backups")
    create.add_argument("--max-age-days", type=float, help="retention: delete this schedule's older backups")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    create.set_defaults(handler=schedules_create)
    for name, handler, text in (("show", schedules_show, "everything about one schedule"),
                                ("delete", schedules_delete, "delete a schedule (its backups stay)"),
                                ("run", schedules_run, "run a schedule now"),
                                ("enable", schedules_enable, "let a schedule fire"),
                                ("disable", schedules_enable, "stop a schedule firing (it stays)")):
        command = schedules.add_parser(name, aliases=["describe"] if name == "show" else [], help=text)
        command.add_argument("schedule_id")
        if name == "run":
            command.add_argument("--watch", action="store_true", help="follow the run's jobs until they end")
        command.set_defaults(handler=handler)
