"""Helpers for the API tests: the spec-checking client and small envelope accessors."""

from __future__ import annotations

import socket
from typing import Any

import jsonschema
from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound

API = "/api/v1"


def closed_port_url(scheme: str = "http") -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


class SpecChecker:
    """Validates responses against the served OpenAPI document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.checked: list[tuple[str, str, int]] = []  # (method, openapi path or "", status)

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.spec
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def validate_schema(self, schema: dict[str, Any], body: Any, where: str) -> None:
        document = {**schema, "components": self.spec.get("components", {})}
        validator = jsonschema.Draft202012Validator(document, format_checker=jsonschema.FormatChecker())
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{where}: body does not match the documented schema: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5]
        ) + f"\nbody: {body!r}"

    def check(self, app: Flask, method: str, path: str, response: Any) -> None:
        adapter = app.url_map.bind("localhost")
        try:
            rule, _ = adapter.match(path.split("?", 1)[0], method=method, return_rule=True)
        except (NotFound, MethodNotAllowed):
            # No operation: the answer must be the error envelope.
            assert response.status_code in (401, 404, 405), response.status_code
            self.validate_schema(self.spec["components"]["schemas"]["Error"], response.get_json(),
                                 f"{method} {path}")
            self.checked.append((method, "", response.status_code))
            return
        from flask_smorest.spec.plugins import FlaskPlugin

        oa_path = FlaskPlugin.flaskpath2openapi(rule.rule)
        if oa_path not in self.spec["paths"]:
            return  # the docs' own routes (/openapi.json, /docs)
        operation = self.spec["paths"][oa_path].get(method.lower())
        assert operation is not None, f"{method} {oa_path} is not documented"
        status = str(response.status_code)
        responses = operation["responses"]
        assert status in responses, (
            f"{method} {oa_path} answered {status}, which is not documented (documented: {sorted(responses)})"
        )
        documented = self._resolve(responses[status])
        content = documented.get("content", {})
        mimetype = response.mimetype
        where = f"{method} {oa_path} {status}"
        assert mimetype in content, f"{where}: {mimetype} not documented ({list(content)})"
        if mimetype == "application/json":
            self.validate_schema(content[mimetype]["schema"], response.get_json(), where)
        self.checked.append((method, oa_path, response.status_code))


class CheckedClient:
    """Flask's test client, plus a spec check of every response."""

    def __init__(self, app: Flask, checker: SpecChecker) -> None:
        self.app = app
        self.checker = checker
        self._client = app.test_client()

    def open(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        response = self._client.open(path, method=method, **kwargs)
        self.checker.check(self.app, method, path, response)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "POST", **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "PUT", **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "DELETE", **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "PATCH", **kwargs)


def error_of(resp: Any) -> str:
    """The message of an error envelope (asserting the envelope's shape on the way)."""
    body = resp.get_json()
    assert set(body) >= {"status", "time"}, body
    assert isinstance(body["status"], dict) and isinstance(body["status"]["error"], str), body
    assert isinstance(body["time"], float | int)
    return body["status"]["error"]


def result_of(resp: Any) -> Any:
    body = resp.get_json()
    assert body["status"] == "ok", body
    assert isinstance(body["time"], float | int)
    return body["result"]
