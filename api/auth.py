"""API keys: when QBM_API_KEYS is set, every /api/v1 route needs one of them.

Keys are accepted as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and compared with
:func:`hmac.compare_digest` against every configured key (no early exit), so the answer time does not
reveal how much of a key was right. What is compared are SHA-256 digests of the keys, which all have the
same length: ``compare_digest`` on raw keys would return early when the lengths differ, telling a prober
the key's length. The 401 is the same whether or not the resource exists, so probing
without a key learns nothing. Probes and docs (/healthz, /readyz, /openapi.json, /docs) stay open:
orchestrators and people reading the docs have no key.
"""

from __future__ import annotations

import hashlib
import hmac

from apispec import APISpec
from flask import Response, request

from api.envelope import error_response
from api.services import services

PROTECTED_PREFIX = "/api/v1"
BEARER = "bearerAuth"
API_KEY_HEADER = "apiKeyHeader"
UNAUTHORIZED = "missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')"


def presented_keys() -> list[str]:
    """The keys this request carries (both headers may be present)."""
    keys = []
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        keys.append(value.strip())
    header = request.headers.get("X-API-Key", "").strip()
    if header:
        keys.append(header)
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def key_is_valid(presented: list[str], configured: tuple[str, ...]) -> bool:
    """True if any presented key is a configured one; every pair is compared, in constant time."""
    matched = False
    for given in presented:
        given_digest = _digest(given)
        for key in configured:
            matched |= hmac.compare_digest(given_digest, _digest(key))
    return matched


def check_request() -> Response | None:
    """``before_request`` hook: a 401 for a protected path without a valid key, else nothing."""
    config = services().config
    if not config.auth_enabled:
        return None
    path = request.path
    if path != PROTECTED_PREFIX and not path.startswith(PROTECTED_PREFIX + "/"):
        return None
    if key_is_valid(presented_keys(), config.api_keys):
        return None
    return error_response(401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="qbm"'})


def document(spec: APISpec, *, enabled: bool) -> None:
    """Declare both schemes; require one of them on every operation when keys are configured (the
    probes and docs opt out per operation)."""
    spec.components.security_scheme(
        BEARER, {"type": "http", "scheme": "bearer", "description": "One of QBM_API_KEYS as a bearer token"}
    )
    spec.components.security_scheme(
        API_KEY_HEADER,
        {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "One of QBM_API_KEYS"},
    )
    if enabled:
        spec.options["security"] = [{BEARER: []}, {API_KEY_HEADER: []}]
