"""Fault switches for the Qdrant double: failing requests and misbehaving downloads.

Tests flip these to see how QBM copes with what real networks and nodes do: a 503 during a rolling
restart, a slow link, a connection dropped mid-download, a stream that stops sending, or bytes that
arrive damaged while the listed checksum is still the original. All methods are thread-safe; the
server consults them on every request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class FailureRule:
    status: int
    path_contains: str | None
    plain_text: bool
    #: Seconds sent as ``Retry-After`` (429 always has one; Qdrant says 1 unless the rule says otherwise).
    retry_after: float | None = None


@dataclass(frozen=True)
class StallRule:
    seconds: float
    path_contains: str
    method: str | None


@dataclass(frozen=True)
class DownloadPlan:
    """What one download should suffer; taken (and counted down) when the download starts."""

    bytes_per_sec: int | None = None
    cut_after: int | None = None
    stall_seconds: float | None = None
    stall_after: int = 0
    corrupt: bool = False


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to a healthy node."""
        with self._lock:
            self._failures: list[list] = []  # [FailureRule, remaining]
            self._bytes_per_sec: int | None = None
            self._cut: tuple[int, int | None] | None = None  # (n_bytes, times left or None = always)
            self._stall: tuple[float, int, int | None] | None = None  # (seconds, after_bytes, times)
            self._corrupt = False
            self._stalls: list[list] = []  # [StallRule, remaining or None = always]
            self._upload_rate: int | None = None

    def fail_next(self, n: int, status: int = 503, path_contains: str | None = None,
                  plain_text: bool = False, retry_after: float | None = None) -> None:
        """The next ``n`` requests (whose path contains ``path_contains``, if given) answer ``status``.

        The body is Qdrant's JSON error envelope, or a plain-text body like a proxy or the auth layer
        would send when ``plain_text`` is true. Nothing is executed for a failed request.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._failures.append([FailureRule(status, path_contains, plain_text, retry_after), n])

    def throttle(self, bytes_per_sec: int | None) -> None:
        """Pace every snapshot download to about ``bytes_per_sec`` (None: full speed)."""
        if bytes_per_sec is not None and bytes_per_sec <= 0:
            raise ValueError("bytes_per_sec must be positive")
        with self._lock:
            self._bytes_per_sec = bytes_per_sec

    def cut_after(self, n_bytes: int, *, times: int | None = 1) -> None:
        """The next ``times`` downloads (None: all) drop the connection after ``n_bytes`` of body.

        Content-Length still announces the full size, so the client sees an incomplete body.
        """
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        with self._lock:
            self._cut = (n_bytes, times)

    def stall(self, seconds: float, *, after_bytes: int = 64 * 1024, times: int | None = 1) -> None:
        """The next ``times`` downloads stop sending for ``seconds`` after ``after_bytes`` of body."""
        with self._lock:
            self._stall = (seconds, after_bytes, times)

    def corrupt_downloads(self, enabled: bool = True) -> None:
        """Downloads serve bytes that differ from the file (same length); listings keep the true checksum."""
        with self._lock:
            self._corrupt = enabled

    def stall_requests(self, path_contains: str, seconds: float, *, method: str | None = None,
                       times: int | None = 1) -> None:
        """The next ``times`` requests (None: all) whose path contains ``path_contains`` -- and whose method is
        ``method``, if given -- wait ``seconds`` before they are handled, like a node busy deleting a huge
        snapshot. The request is recorded in ``requests_seen`` before it waits, so a test can tell that a
        client is stuck in it. ``stop()`` of the double ends every wait at once."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        with self._lock:
            self._stalls.append([StallRule(seconds, path_contains, method.upper() if method else None), times])

    def throttle_uploads(self, bytes_per_sec: int | None) -> None:
        """Read snapshot upload bodies (``POST .../snapshots/upload``) at about ``bytes_per_sec`` (None: full
        speed), so a test can act while a client is in the middle of an upload."""
        if bytes_per_sec is not None and bytes_per_sec <= 0:
            raise ValueError("bytes_per_sec must be positive")
        with self._lock:
            self._upload_rate = bytes_per_sec

    # ----- used by the server ----------------------------------------------------------------------

    def take_stall(self, method: str, path: str) -> float | None:
        with self._lock:
            for entry in self._stalls:
                rule, remaining = entry
                if rule.path_contains in path and (rule.method is None or rule.method == method.upper()):
                    if remaining is not None:
                        entry[1] = remaining - 1
                        self._stalls = [e for e in self._stalls if e[1] is None or e[1] > 0]
                    return rule.seconds
            return None

    def upload_rate(self) -> int | None:
        with self._lock:
            return self._upload_rate

    def take_failure(self, path: str) -> FailureRule | None:
        with self._lock:
            for entry in self._failures:
                rule, remaining = entry
                if remaining > 0 and (rule.path_contains is None or rule.path_contains in path):
                    entry[1] = remaining - 1
                    self._failures = [e for e in self._failures if e[1] > 0]
                    return rule
            return None

    def plan_download(self) -> DownloadPlan:
        with self._lock:
            cut_after = None
            if self._cut is not None:
                cut_after, times = self._cut
                if times is not None:
                    self._cut = (cut_after, times - 1) if times > 1 else None
            stall_seconds, stall_after = None, 0
            if self._stall is not None:
                stall_seconds, stall_after, times = self._stall
                if times is not None:
                    self._stall = (stall_seconds, stall_after, times - 1) if times > 1 else None
            return DownloadPlan(bytes_per_sec=self._bytes_per_sec, cut_after=cut_after,
                                stall_seconds=stall_seconds, stall_after=stall_after, corrupt=self._corrupt)
