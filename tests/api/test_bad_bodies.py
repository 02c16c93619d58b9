"""Bodies the JSON parser itself cannot handle get a 4xx with a message on every operation that takes a body,
never a 500: too deep for Python's parser (RecursionError), deeper than the API accepts, invalid UTF-8, an
integer past Python's conversion limit, numbers JSON has no room for, and plain syntax errors."""

from __future__ import annotations

import re

import pytest

from tests.api.helpers import error_of

DEEP = "[" * 100_000 + "]" * 100_000  # far past the parser's recursion limit
NESTED = '{"type": "backup", "collection_name": "a", "metadata": {"x": ' + "[" * 40 + "]" * 40 + "}}"
BAD_BODIES = {
    "parser recursion": DEEP.encode(),
    "deeper than allowed": NESTED.encode(),
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "huge integer": b'{"shard_id": ' + b"9" * 5000 + b"}",
    "syntax error": b'{"name": ',
    "lone surrogate": b'{"name": "\\ud800"}',
}


def _operations_with_a_body(client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").get_json()
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                concrete = re.sub(r"\{[^}]+\}", lambda m: "0" if "shard" in m.group(0) else "alpha", path)
                found.append((method.upper(), concrete))
    return found


def test_the_spec_lists_the_operations_that_take_bodies(client):
    operations = _operations_with_a_body(client)
    assert ("POST", "/api/v1/jobs") in operations
    assert ("PUT", "/api/v1/collections/alpha/snapshots/recover") in operations
    assert len(operations) >= 6


@pytest.mark.parametrize("kind", sorted(BAD_BODIES))
def test_every_body_taking_operation_refuses_unparseable_bodies_with_a_4xx(client, kind):
    body = BAD_BODIES[kind]
    for method, path in _operations_with_a_body(client):
        resp = client.open(path, method=method, data=body, content_type="application/json")
        assert 400 <= resp.status_code < 500, (kind, method, path, resp.status_code, resp.get_data()[:300])
        assert error_of(resp), (kind, method, path)
        if kind in ("parser recursion", "deeper than allowed"):
            assert resp.status_code == 400 and "nested more than 32 levels" in error_of(resp), (method, path)
