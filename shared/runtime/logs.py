"""Logging set-up shared by every process: one JSON object per line on stderr.

Structured lines are easy to ship and grep; ``job_id``, ``step`` and ``collection`` are added to a line
by passing them in ``extra=``, or for everything logged while a worker runs a step, by :func:`log_context`
(so lines from the storage backends and the Qdrant client carry the job too). Our code never logs secrets;
as a last guard every finished line -- message, traceback and extra fields alike -- is scrubbed of every
secret value the process knows: the ones in its configuration and any registered later with
:func:`register_secret` (S3 secret keys of storage backends are registered when a client is built).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
from collections.abc import Iterable, Iterator

_CONTEXT_FIELDS = ("job_id", "step", "collection", "storage_id", "schedule_id", "queue")
#: Shorter values are not scrubbed: replacing every "ab" in every line would garble logs and protect nothing.
MIN_SECRET_LENGTH = 4

#: secret -> its spelling inside a JSON string (escapes differ for quotes, backslashes, non-ASCII), longest first.
_secrets: dict[str, str] = {}
_secrets_lock = threading.Lock()
_context: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar("qbm_log_context", default=None)


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from every log line this process writes from now on."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _secrets_lock:
        known = {**_secrets, value: json.dumps(value)[1:-1]}
        _secrets = dict(sorted(known.items(), key=lambda item: len(item[0]), reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret (raw or as escaped inside a JSON string) replaced by ``***``."""
    for secret, escaped in _secrets.items():
        if secret in text:
            text = text.replace(secret, "***")
        if escaped != secret and escaped in text:
            text = text.replace(escaped, "***")
    return text


def bind_log_context(**fields: object) -> contextvars.Token:
    """Add ``fields`` (job_id, step, collection, ...) to every line this thread logs until
    :func:`unbind_log_context`."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def unbind_log_context(token: contextvars.Token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """:func:`bind_log_context` for the duration of a ``with`` block."""
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        unbind_log_context(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        context = _context.get() or {}
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, default=str))


JsonFormatter.converter = __import__("time").gmtime  # timestamps in UTC, matching the Z suffix


def setup_logging(level: str = "INFO", secrets: Iterable[str | None] = ()) -> None:
    """Send every logger's records, as JSON lines, to this process's stderr at ``level``.

    Libraries that configure their own handlers (gunicorn, Dramatiq) are pointed back at the root logger
    by their integration code (api/server.py, workers/main.py), so their lines come out the same way.
    """
    for secret in secrets:
        register_secret(secret)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG, which may carry presigned signatures.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLevelName(level)))
