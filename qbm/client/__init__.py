"""``qbm`` commands for people at a terminal: talk to a running QBM API over HTTP.

``qbm backup now``, ``qbm backups ...``, ``qbm restore``, ``qbm jobs ...``, ``qbm schedules ...`` and
``qbm storage ...`` (one module each, in the shape of Velero's ``create/get/describe`` and restic's progress
output). They need no server configuration and no Redis -- only ``QBM_API_URL`` (default
``http://127.0.0.1:8080``) and, when the API has keys, ``QBM_API_KEY``. Every failure is one line on stderr:
exit status 4 when the API cannot be reached, 1 when it answered with an error (its own message is shown) or
the job a command followed did not complete, so scripts can tell them apart.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from qbm.client import backups, jobs, schedules, storage
from qbm.client.http import DEFAULT_API_URL, ApiClient, ClientError

CLIENT_COMMANDS = ("backup", "backups", "restore", "jobs", "schedules", "storage")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the client subcommands to ``qbm``'s parser."""
    for module in (backups, jobs, schedules, storage):
        module.register(sub)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    api = ApiClient(os.environ.get("QBM_API_URL") or DEFAULT_API_URL, os.environ.get("QBM_API_KEY") or None)
    try:
        return int(args.handler(api, args, out))
    except ClientError as exc:
        print(f"qbm: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
