"""The client's one way to talk to the QBM API: plain ``requests``, the ``{status, time, result}`` envelope
unwrapped, and every failure turned into a :class:`ClientError` carrying the exit status the README documents
(4: the API cannot be reached; 1: it answered with an error, whose own message is kept)."""

from __future__ import annotations

import re
from typing import Any

import requests

DEFAULT_API_URL = "http://127.0.0.1:8080"
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 4


class ClientError(Exception):
    """One line for stderr, the exit status, and the HTTP status when the API answered (None otherwise)."""

    def __init__(self, message: str, code: int = EXIT_API_ERROR, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


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
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 30.0) -> None:
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
            raise ClientError(f"API error {response.status_code}: {message or response.reason}",
                              status=response.status_code)
        if isinstance(body, dict) and body.get("status") == "ok" and "result" in body:
            return body["result"]
        return body  # GET /jobs answers its page bare

    def default_storage(self) -> str:
        """The default storage backend's id (for commands whose path names a backend)."""
        for config in self.call("GET", "/storage"):
            if config.get("is_default"):
                return str(config["id"])
        raise ClientError("there is no default storage backend; name one with --storage ID "
                          "(`qbm storage list` shows them)")
