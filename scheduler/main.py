"""The scheduler process. Recurring backups and retention arrive with the scheduling issue; until then the
process only proves its configuration and Redis connection and waits to be stopped."""

from __future__ import annotations

import signal
import threading

from shared.config import Config


def run(config: Config) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0
