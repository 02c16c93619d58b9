"""Logging set-up shared by every process: one JSON object per line on stderr.

Structured lines are easy to ship and grep; ``job_id``, ``step`` and ``collection`` are added to a line
by passing them in ``extra=``. Values that look like secrets are never logged by our code; as a last
guard, :class:`RedactingFilter` masks the values of secrets it was given.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

_CONTEXT_FIELDS = ("job_id", "step", "collection", "storage_id", "schedule_id", "queue")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = __import__("time").gmtime  # timestamps in UTC, matching the Z suffix


class RedactingFilter(logging.Filter):
    """Replace any of the given secret values in a formatted message with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            redacted = message
            for secret in self.secrets:
                redacted = redacted.replace(secret, "***")
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG, which may carry presigned signatures.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLevelName(level)))
