"""Which ``location`` PUT /collections/{name}/snapshots/recover may hand to Qdrant.

Qdrant fetches a recover location itself, from inside the cluster's network. Passed through unchecked,
the endpoint would let any API caller make Qdrant request any URL (cloud metadata services, admin ports
of neighbouring services: server-side request forgery) or read any file Qdrant can. So:

* only ``http``, ``https`` and ``file`` schemes;
* http(s) only to an allowed host: ``QBM_RECOVER_ALLOWED_HOSTS`` (``host`` = any port of it, ``host:port``
  = that port), by default Qdrant's own address (peer recovery) and the S3 endpoints of the registered
  storage backends (presigned backup URLs);
* ``file://`` only without a host (or ``localhost``); whether the path is inside Qdrant's snapshots
  directory only Qdrant knows, so it is forwarded and Qdrant's refusal (403) is reported as a 422.

The location is compared as Python parses it, but Qdrant parses it again with the WHATWG rules of Rust's
``url`` crate. Anything on which the two could disagree about the host is refused outright: backslashes
(WHATWG reads ``http://a\\@b`` as host ``a``, Python as host ``b``), user info (``user@host``), white space
and control characters (which WHATWG strips or removes). A host that is spelled unusually
(``%61``-escapes, decimal IPs, a trailing dot) simply does not equal an allowed entry and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

SCHEMES = ("http", "https", "file")
DEFAULT_PORTS = {"http": 80, "https": 443}
_FORBIDDEN_ENTRY_CHARS = set("/@?#\\") | {chr(c) for c in range(0x21)} | {"\x7f"}


class InvalidLocation(ValueError):
    """The location may not be used; the message is for the caller (without the field name)."""


@dataclass(frozen=True)
class HostRule:
    """One allowlist entry: a host name or IP (lower case, IPv6 without brackets) and optionally a port."""

    host: str
    port: int | None = None

    def allows(self, host: str, port: int) -> bool:
        return self.host == host and (self.port is None or self.port == port)

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port is None else f"{shown}:{self.port}"


def parse_host_entry(entry: str) -> HostRule:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> HostRule; ValueError when it is none of those."""
    text = entry.strip()
    if not text or any(c in _FORBIDDEN_ENTRY_CHARS for c in text):
        raise ValueError(f"{entry!r} is not a host or host:port")
    try:
        parsed = urlsplit(f"//{text}")
        port = parsed.port
    except ValueError:
        raise ValueError(f"{entry!r} is not a host or host:port (bad port)") from None
    host = parsed.hostname or ""
    if not host:
        raise ValueError(f"{entry!r} is not a host or host:port")
    return HostRule(host.lower(), port)


def rule_for_url(url: str) -> HostRule | None:
    """The exact host:port of an http(s) URL (Qdrant's own URL, an S3 endpoint), or None if it has none."""
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError:
        return None
    if parsed.scheme.lower() not in DEFAULT_PORTS or not parsed.hostname:
        return None
    return HostRule(parsed.hostname.lower(), port or DEFAULT_PORTS[parsed.scheme.lower()])


def _split(location: str) -> SplitResult:
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in location):
        raise InvalidLocation("must not contain white space or control characters")
    if "\\" in location:
        raise InvalidLocation("must not contain backslashes")
    parsed = urlsplit(location)
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES or not location.lower().startswith(f"{scheme}://"):
        raise InvalidLocation("must be an http://, https:// or file:// URL")
    return parsed


def check_recover_location(location: str, allowed: Iterable[HostRule]) -> str:
    """Return ``location`` unchanged if Qdrant may be sent to it, else raise :class:`InvalidLocation`."""
    parsed = _split(location)
    scheme = parsed.scheme.lower()
    if "@" in parsed.netloc:
        raise InvalidLocation("must not contain user info (user@host); pass a key for the URL in api_key")
    if scheme == "file":
        if parsed.netloc.lower() not in ("", "localhost"):
            raise InvalidLocation("a file:// URL must not name a host (file:///path, inside Qdrant's snapshots "
                                  "directory)")
        if not parsed.path.startswith("/"):
            raise InvalidLocation("a file:// URL needs an absolute path")
        return location
    try:
        port = parsed.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise InvalidLocation("has an invalid port") from None
    host = (parsed.hostname or "").lower()
    if not host:
        raise InvalidLocation("must name a host")
    rules = list(allowed)
    if not any(rule.allows(host, port) for rule in rules):
        shown = ", ".join(sorted({str(rule) for rule in rules})) or "none"
        raise InvalidLocation(f"host {host}:{port} is not allowed (allowed: {shown}; the operator can change "
                              "this with QBM_RECOVER_ALLOWED_HOSTS)")
    return location


__all__ = ["HostRule", "InvalidLocation", "check_recover_location", "parse_host_entry", "rule_for_url"]
