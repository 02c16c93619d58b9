"""``qbm storage list|show|create|test|delete``: the API's /storage resource.

An S3 secret key is never taken on the command line (it would show in ``ps`` and shell history): it is read
from ``QBM_S3_SECRET_KEY``, else asked for at the terminal, else read as one line from standard input.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, TextIO

from qbm.client.http import EXIT_API_ERROR, ApiClient, ClientError
from qbm.client.output import describe, table

SECRET_ENV = "QBM_S3_SECRET_KEY"


def _where(config: dict[str, Any]) -> str:
    if config["type"] == "local":
        return str(config.get("path"))
    return f"{config.get('s3_endpoint')} bucket {config.get('s3_bucket')}"


def storage_list(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    items = api.call("GET", "/storage")
    rows = [[c["id"], c["name"], c["type"], "yes" if c["is_default"] else "-", _where(c)] for c in items]
    table(rows, ["ID", "NAME", "TYPE", "DEFAULT", "WHERE"], out)
    print(f"{len(rows)} storage backend(s)", file=out)
    return 0


def storage_show(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    config = api.call("GET", f"/storage/{args.storage_id}")
    describe([("Storage", config["id"]), ("Name", config["name"]), ("Type", config["type"]),
              ("Default", config["is_default"]), ("Path", config.get("path")),
              ("S3 endpoint", config.get("s3_endpoint")), ("S3 bucket", config.get("s3_bucket")),
              ("S3 region", config.get("s3_region")), ("S3 access key", config.get("s3_access_key")),
              ("Created", config["created_at"]), ("Updated", config["updated_at"])], out)
    return 0


def _secret() -> str:
    secret = os.environ.get(SECRET_ENV)
    if secret:
        return secret
    if sys.stdin.isatty():
        return getpass.getpass("S3 secret key: ")
    line = sys.stdin.readline().strip()
    if not line:
        raise ClientError(f"an S3 backend needs its secret key: set {SECRET_ENV} or give it on standard input")
    return line


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name, "type": args.type}
    if args.type == "local":
        body["path"] = args.path
    else:
        body.update({"s3_endpoint": args.endpoint, "s3_bucket": args.bucket, "s3_region": args.region,
                     "s3_access_key": args.access_key, "s3_secret_key": _secret()})
    if getattr(args, "default", False):
        body["is_default"] = True
    return {key: value for key, value in body.items() if value is not None}


def storage_create(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    config = api.call("POST", "/storage", json=_body(args))
    print(f"storage backend {config['id']} created: {config['name']} ({config['type']}, {_where(config)})"
          + (", the default" if config["is_default"] else ""), file=out)
    return 0


def storage_test(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    result = api.call("POST", "/storage/test", json=_body(args))
    if result["success"]:
        print(f"ok: {result['message']}", file=out)
        return 0
    print(f"failed: {result['message']}", file=sys.stderr)
    return EXIT_API_ERROR


def storage_delete(api: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    api.call("DELETE", f"/storage/{args.storage_id}", params={"force": "true"} if args.force else {})
    print(f"storage backend {args.storage_id} deleted; the backups in it were not touched", file=out)
    return 0


def _config_args(parser: argparse.ArgumentParser, *, name_required: bool) -> None:
    if name_required:
        parser.add_argument("name")
    else:
        parser.add_argument("name", nargs="?", default="test", help="a name (not saved)")
    parser.add_argument("--type", choices=("local", "s3"), required=True)
    parser.add_argument("--path", help="local: a directory under QBM_STORAGE_ROOTS")
    parser.add_argument("--endpoint", help="s3: endpoint URL")
    parser.add_argument("--bucket", help="s3: bucket name")
    parser.add_argument("--region", help="s3: region")
    parser.add_argument("--access-key", help=f"s3: access key (the secret key comes from {SECRET_ENV} or a prompt)")


def register(sub: argparse._SubParsersAction) -> None:
    storage = sub.add_parser("storage", help="storage backends").add_subparsers(dest="action", required=True)
    slist = storage.add_parser("list", aliases=["get"], help="every storage backend")
    slist.set_defaults(handler=storage_list)
    show = storage.add_parser("show", aliases=["describe"], help="one storage backend (never its secret)")
    show.add_argument("storage_id")
    show.set_defaults(handler=storage_show)
    create = storage.add_parser("create", help="register a storage backend")
    _config_args(create, name_required=True)
    create.add_argument("--default", action="store_true", help="make it the default backend")
    create.set_defaults(handler=storage_create)
    test = storage.add_parser("test", help="try a backend's settings without saving them (exit 1 if it fails)")
    _config_args(test, name_required=False)
    test.set_defaults(handler=storage_test)
    delete = storage.add_parser("delete", help="forget a storage backend (its backups stay in it)")
    delete.add_argument("storage_id")
    delete.add_argument("--force", action="store_true", help="even while it holds backups")
    delete.set_defaults(handler=storage_delete)
