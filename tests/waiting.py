"""Waiting in tests: on a condition, with a deadline -- never a bare sleep as synchronisation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition", *,
               details: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; after ``timeout`` seconds fail
    with an AssertionError naming ``what`` (and ``details()`` as of then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)
