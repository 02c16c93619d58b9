"""``qbm backup now``, ``qbm backups list|show|delete|pin|unpin|prune`` and ``qbm restore``: backups as the
catalog in storage shows them (/backups), and the jobs that make and restore them (/jobs)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from qbm.client.http import ApiClient, ClientError
from qbm.client.output import describe, human_size, table
from qbm.client.progress import watch


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
    return watch(api, job["id"], out) if args.watch else 0


def _made_by(backup: dict[str, Any]) -> str:
    return backup.get("schedule_id") or "by hand"


def backups_list(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    params = {"page": args.page, "limit": args.limit}
    if args.storage:
        params["storage_id"] = args.storage
    if args.collection:
        params["collection"] = args.collection
    page = api.call("GET", "/backups", params=params)
    rows = [[b["backup_id"], b["collection"], "-" if b["shard_id"] is None else str(b["shard_id"]),
             human_size(b["size"]), b["created_at"], "yes" if b.get("pinned") else "-", _made_by(b)]
            for b in page["items"]]
    table(rows, ["BACKUP ID", "COLLECTION", "SHARD", "SIZE", "CREATED", "PINNED", "MADE BY"], out)
    print(f"{len(rows)} of {page['total']} backup(s)" + (f" in storage {page['items'][0]['storage_id']}"
                                                         if rows else ""), file=out)
    return 0


def _backup_path(api: ApiClient, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """``/backups/{storage}/{backup}`` (the default backend's when none is named) and its query."""
    storage_id = args.storage or api.default_storage()
    return f"/backups/{storage_id}/{args.backup_id}", ({"collection": args.collection} if args.collection else {})


def describe_backup(backup: dict[str, Any], out: TextIO) -> None:
    describe([
        ("Backup", backup["backup_id"]),
        ("Storage", backup["storage_id"]),
        ("Collection", backup["collection"]),
        ("Shard", backup["shard_id"]),
        ("Type", backup["type"]),
        ("Created", backup["created_at"]),
        ("Size", f"{human_size(backup['size'])} ({backup['size']} bytes)"),
        ("SHA-256", backup["sha256"]),
        ("Points", backup.get("points_count")),
        ("Pinned", bool(backup.get("pinned"))),
        ("Made by", f"schedule {backup['schedule_id']}" if backup.get("schedule_id") else "hand"),
        ("Job", backup["job_id"]),
        ("Key", backup["key"]),
        ("Qdrant", f"{backup.get('qdrant_version') or '-'} (snapshot {backup['qdrant_snapshot_name']})"),
    ], out)


def backups_show(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    path, query = _backup_path(api, args)
    describe_backup(api.call("GET", path, params=query), out)
    return 0


def backups_delete(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    path, query = _backup_path(api, args)
    gone = api.call("DELETE", path, params=query)
    print(f"backup {gone['backup_id']} of {gone['collection']} deleted from storage {gone['storage_id']}", file=out)
    return 0


def backups_pin(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    path, query = _backup_path(api, args)
    backup = api.call("PUT" if args.action == "pin" else "DELETE", f"{path}/pin", params=query)
    if backup["pinned"]:
        print(f"backup {backup['backup_id']} pinned: no retention rule or delete removes it until it is unpinned",
              file=out)
    else:
        print(f"backup {backup['backup_id']} unpinned: retention rules apply to it again", file=out)
    return 0


def backups_prune(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"collection": args.collection, "dry_run": args.dry_run}
    for key, value in (("keep_last", args.keep_last), ("max_age_days", args.max_age_days),
                       ("storage_id", args.storage), ("schedule_id", args.schedule)):
        if value is not None:
            body[key] = value
    result = api.call("POST", "/backups/prune", json=body)
    verb = "would delete" if result["dry_run"] else "deleted"
    for backup in result["deleted"]:
        print(f"{verb} {backup['backup_id']} ({human_size(backup['size'])}, {backup['created_at']})", file=out)
    print(f"{len(result['deleted'])} {verb}, {len(result['kept'])} kept ({len(result['pinned'])} of them pinned)",
          file=out)
    return 0


def restore(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    """Restore a backup by its id: its collection and kind are read from the catalog, so the id is enough."""
    storage_id = args.storage or api.default_storage()
    backup = api.call("GET", f"/backups/{storage_id}/{args.backup_id}",
                      params={"collection": args.collection} if args.collection else {})
    shard = backup["shard_id"]
    if shard is not None and args.replace:
        raise ClientError(f"backup {args.backup_id} is a shard backup: its restore always replaces shard {shard}; "
                          "leave out --replace")
    metadata: dict[str, Any] = {"storage_id": storage_id}
    if args.target:
        metadata["target_collection"] = args.target
    if args.replace:
        metadata["replace"] = True
    if args.priority:
        metadata["priority"] = args.priority
    if args.upload:
        metadata["upload"] = True
    body: dict[str, Any] = {"type": "restore" if shard is None else "shard_restore",
                            "collection_name": backup["collection"], "snapshot_name": backup["backup_id"],
                            "metadata": metadata}
    if shard is not None:
        body["shard_id"] = shard
    try:
        job = api.call("POST", "/jobs", json=body)
    except ClientError as exc:
        if exc.status == 409 and "metadata.replace" in str(exc):
            raise ClientError(f"{exc} (with qbm: --replace, or --target NAME)") from None
        raise
    target = args.target or backup["collection"]
    print(f"job {job['id']} created: {job['type']} of backup {backup['backup_id']} into collection {target}"
          + (f" shard {shard}" if shard is not None else "") + f" from storage {storage_id}", file=out)
    return watch(api, job["id"], out) if args.watch else 0


def _locate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup_id")
    parser.add_argument("--storage", help="storage backend id (default: the default backend)")
    parser.add_argument("--collection", help="the backup's collection (one read instead of a scan)")


def register(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser("backup", help="start a backup through the API").add_subparsers(dest="action",
                                                                                             required=True)
    now = backup.add_parser("now", aliases=["create"], help="back up a collection now")
    now.add_argument("collection")
    now.add_argument("--storage", help="storage backend id (default: the default backend)")
    now.add_argument("--shard", type=int, help="back up only this shard")
    now.add_argument("--watch", action="store_true",
                     help="show a progress bar until the backup ends, then the backup id a restore needs")
    now.set_defaults(handler=backup_now)

    backups = sub.add_parser("backups", help="the backups in storage").add_subparsers(dest="action", required=True)
    blist = backups.add_parser("list", aliases=["get"], help="list backups, newest first")
    blist.add_argument("--storage", help="storage backend id (default: the default backend)")
    blist.add_argument("--collection")
    blist.add_argument("--page", type=int, default=1)
    blist.add_argument("--limit", type=int, default=20)
    blist.set_defaults(handler=backups_list)
    for name, handler, text in (("show", backups_show, "everything about one backup"),
                                ("delete", backups_delete, "delete a backup (manifest first, then its data)"),
                                ("pin", backups_pin, "keep a backup whatever retention says, until unpinned"),
                                ("unpin", backups_pin, "let retention rules apply to a backup again")):
        command = backups.add_parser(name, aliases=["describe"] if name == "show" else [], help=text)
        _locate_args(command)
        command.set_defaults(handler=handler)
    prune = backups.add_parser("prune", help="apply retention rules to a collection's backups once")
    prune.add_argument("collection")
    prune.add_argument("--keep-last", type=int)
    prune.add_argument("--max-age-days", type=float)
    prune.add_argument("--schedule", help="only the backups this schedule made (default: every backup)")
    prune.add_argument("--storage", help="storage backend id (default: the default backend)")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    prune.set_defaults(handler=backups_prune)

    restore_cmd = sub.add_parser("restore", help="restore a backup by its id (a restore job)")
    _locate_args(restore_cmd)
    restore_cmd.add_argument("--target", help="restore under this collection name (default: the backup's own)")
    restore_cmd.add_argument("--replace", action="store_true",
                             help="replace the target collection if it exists (refused otherwise)")
    restore_cmd.add_argument("--priority", choices=("replica", "snapshot", "no_sync"))
    restore_cmd.add_argument("--upload", action="store_true",
                             help="S3 backups: stream through the worker instead of Qdrant pulling a URL")
    restore_cmd.add_argument("--watch", action="store_true", help="show a progress bar until the restore ends")
    restore_cmd.set_defaults(handler=restore)
