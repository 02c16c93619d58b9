"""The response shapes every endpoint shares, in one place.

Success bodies are ``{"status": "ok", "time": <seconds>, "result": ...}`` and error bodies use Qdrant's own
envelope ``{"status": {"error": "<message>"}, "time": <seconds>}``, so a client that already speaks
Qdrant's API parses ours the same way. flask-smorest builds responses and documents them; the hooks it
offers for that (``Blueprint._prepare_response_content`` / ``_make_doc_response_schema`` and
``Api.handle_http_exception`` / ``Api.ERROR_SCHEMA``) are overridden here so that the served OpenAPI
document describes exactly the bodies we send.
"""

from __future__ import annotations

import http
import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

import marshmallow as ma
from flask import Request, Response, current_app, g, jsonify, request
from flask_smorest import Api, abort
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.utils import resolve_schema_instance
from marshmallow import fields
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from shared.intake.schema import flatten_errors

log = logging.getLogger("qbm.api")

GENERIC_500 = "internal server error; the details are in the server log"

#: Why each error status is answered, for the operation docs (the message itself is in the body).
ERROR_DESCRIPTIONS = {
    400: "Malformed request (e.g. a body that is not valid JSON), or Qdrant rejected the request",
    401: "Missing or wrong API key (only when API keys are configured)",
    404: "Unknown resource",
    409: "The change is not allowed in the resource's current state",
    413: "The request body is larger than 1 MiB",
    415: "The request body is not JSON",
    422: "Invalid input; the message names the field",
    502: "Qdrant answered with an error that has no better mapping; the message names Qdrant's status",
    503: "Qdrant or Redis cannot be reached, or the server lacks configuration the request needs (an S3 secret "
         "key cannot be stored or read without QBM_SECRET_KEY)",
}


# --- schemas shared by every response ------------------------------------------------------------------


class ErrorStatusSchema(ma.Schema):
    error = fields.String(required=True, metadata={"description": "What went wrong, for a person"})


class ErrorSchema(ma.Schema):
    """Qdrant's error envelope."""

    ENVELOPE = False

    status = fields.Nested(ErrorStatusSchema, required=True)
    time = fields.Float(required=True, metadata={"description": "Seconds spent on the request"})


class ScalarResult(ma.Schema):
    """A "schema" for results that are not objects (``true``, a list of names, ``null``).

    Dumping passes the value through unchanged; :meth:`result_field` describes it for the docs.
    """

    @staticmethod
    def result_field() -> fields.Field:  # pragma: no cover - always overridden
        raise NotImplementedError

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        return obj


class BoolResult(ScalarResult):
    @staticmethod
    def result_field() -> fields.Field:
        return fields.Boolean(required=True)


class NullResultSchema(ma.Schema):
    """Documents the ``202 Accepted`` answers, whose ``result`` is always ``null``."""

    ENVELOPE = False

    status = fields.String(required=True, validate=ma.validate.OneOf(["ok"]))
    time = fields.Float(required=True, metadata={"description": "Seconds spent on the request"})
    result = fields.Raw(required=True, metadata={"type": "null", "description": "Always null"})


_ENVELOPES: dict[tuple[type, bool], type[ma.Schema]] = {}


def _schema_base_name(cls: type) -> str:
    name = cls.__name__
    return name[: -len("Schema")] if name.endswith("Schema") and name != "Schema" else name


def envelope_schema(schema: Any) -> Any:
    """The documented body for ``schema``: the success envelope around it, built once per schema.

    Schemas with ``ENVELOPE = False`` (the bare job list) and non-marshmallow docs (dicts, for binary
    downloads) are returned unchanged.
    """
    if not isinstance(schema, ma.Schema) or not getattr(schema, "ENVELOPE", True):
        return schema
    cls, many = type(schema), bool(schema.many)
    key = (cls, many)
    if key not in _ENVELOPES:
        if isinstance(schema, ScalarResult):
            result: fields.Field = schema.result_field()
        elif many:
            result = fields.List(fields.Nested(cls), required=True)
        else:
            result = fields.Nested(cls, required=True)
        name = _schema_base_name(cls) + ("List" if many else "") + "Envelope"
        _ENVELOPES[key] = type(
            name,
            (ma.Schema,),
            {
                "status": fields.String(required=True, validate=ma.validate.OneOf(["ok"])),
                "time": fields.Float(required=True, metadata={"description": "Seconds spent on the request"}),
                "result": result,
                "__doc__": f"Success envelope around {_schema_base_name(cls)}.",
            },
        )
    return _ENVELOPES[key]


# --- building bodies ----------------------------------------------------------------------------------


def start_timer() -> None:
    """Remember when the request started, for the envelope's ``time``."""
    g.qbm_started = time.perf_counter()


def elapsed() -> float:
    started = g.get("qbm_started")
    return round(time.perf_counter() - started, 6) if started is not None else 0.0


def ok_body(result: Any) -> dict[str, Any]:
    return {"status": "ok", "time": elapsed(), "result": result}


def ok_response(result: Any, status: int = 200) -> Response:
    """A finished success response, for views that answer something other than their main schema
    (``202`` with ``result: null``)."""
    resp = jsonify(ok_body(result))
    resp.status_code = status
    return resp


def error_body(message: str) -> dict[str, Any]:
    return {"status": {"error": message}, "time": elapsed()}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    resp = jsonify(error_body(message))
    resp.status_code = status
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


# --- validation messages ------------------------------------------------------------------------------

_LOCATIONS = {"json": "body", "query": "query", "path": "path", "view_args": "path"}


def validation_message(messages: Any) -> str:
    """Turn webargs/marshmallow error dicts into one line that names each field.

    ``{"json": {"metadata": {"storage_id": ["Not a string."]}}}`` becomes
    ``"metadata.storage_id: Not a string."``; errors about the whole body (``_schema``) name the body.
    """
    parts = []
    for path, text in flatten_errors(messages):
        names = list(path)
        location = None
        if names and names[0] in _LOCATIONS:
            location = _LOCATIONS[names.pop(0)]
        if names:
            parts.append(f"{'.'.join(names)}: {text}")
        elif location == "body":
            parts.append(f"request body: {text}")
        else:
            parts.append(text)
    return "; ".join(parts) or "invalid request"


# --- the Blueprint and the Api ------------------------------------------------------------------------


#: Request bodies nested deeper than this are refused (400) before any schema sees them: the contract's deepest
#: body is a few levels, and a deeper one can make the JSON parser or a validator recurse out of stack.
MAX_BODY_DEPTH = 32


class BodyParser(FlaskParser):
    """webargs' Flask parser, with every body the JSON parser itself cannot handle answered 400 (never 500):
    nesting deeper than MAX_BODY_DEPTH (Python's parser raises RecursionError from ~1000 levels), integers
    past Python's 4300-digit conversion limit (ValueError), besides what webargs already reports (bad syntax,
    invalid UTF-8)."""

    def _raw_load_json(self, req: Request) -> Any:
        try:
            value = super()._raw_load_json(req)
        except RecursionError:
            abort(400, message=f"request body: the JSON is nested more than {MAX_BODY_DEPTH} levels deep")
        except json.JSONDecodeError:
            raise
        except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
            abort(400, message=f"request body: the JSON cannot be read: {exc}")
        _check_depth(value)
        return value


def _check_depth(value: Any) -> None:
    """Iteratively: a recursive check would itself run out of stack on the bodies it exists to refuse."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_BODY_DEPTH:
                abort(400, message=f"request body: the JSON is nested more than {MAX_BODY_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with our success envelope, JSON-only bodies and documented errors."""

    ARGUMENTS_PARSER = BodyParser()

    def response(self, status_code: int, schema: Any = None, **kwargs: Any) -> Callable:
        """As flask-smorest's, but a schema with ``ENVELOPE = False`` is sent bare (GET /jobs)."""
        decorator = super().response(status_code, schema, **kwargs)
        instance = resolve_schema_instance(schema)
        if isinstance(instance, ma.Schema) and not getattr(instance, "ENVELOPE", True):

            def bare(func: Callable) -> Callable:
                @wraps(func)
                def marked(*args: Any, **kw: Any) -> Any:
                    g.qbm_bare = True
                    return func(*args, **kw)

                return decorator(marked)

            return bare
        return decorator

    def _prepare_response_content(self, data: Any) -> Any:
        if g.get("qbm_bare"):
            return data
        return ok_body(data)

    @staticmethod
    def _make_doc_response_schema(schema: Any) -> Any:
        return envelope_schema(schema)

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Callable:
        """As flask-smorest's; for JSON bodies a request that is not JSON gets 415 (not a confusing
        "missing field" error), and the 400/413/415 answers every JSON body can get are documented."""
        decorator = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return decorator

        def wrap(func: Callable) -> Callable:
            inner = decorator(func)

            @wraps(inner)
            def checked(*args: Any, **kw: Any) -> Any:
                if not request.is_json:
                    abort(415, message="the request body must be JSON (Content-Type: application/json)")
                return inner(*args, **kw)

            return self.errors(400, 413, 415)(checked)

        return wrap

    def errors(self, *codes: int) -> Callable:
        """Document the error answers an operation can give, all in the error envelope."""

        def decorator(func: Callable) -> Callable:
            for code in codes:
                func = self.alt_response(
                    code, schema=ErrorSchema, description=ERROR_DESCRIPTIONS.get(code)
                )(func)
            return func

        return decorator


class QbmApi(Api):
    """flask-smorest's Api with Qdrant's error envelope for every HTTP error."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Response:  # type: ignore[override]
        code = error.code or 500
        headers: dict[str, str] = {}
        data = getattr(error, "data", None) or {}
        if code >= 500 and code not in (502, 503, 504):
            original = getattr(error, "original_exception", None)
            if original is not None:
                log.error("unhandled error on %s %s", request.method, request.path, exc_info=original)
            message = data.get("message") or GENERIC_500
        elif "message" in data:
            message = str(data["message"])
        elif "messages" in data or "errors" in data:
            message = validation_message(data.get("errors") or data.get("messages"))
        elif code == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than the {limit} bytes the API accepts" if limit else \
                "the request body is too large"
        elif request.routing_exception is error and code == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif isinstance(error, MethodNotAllowed):
            allowed = sorted(error.valid_methods or ())
            message = f"method {request.method} is not allowed on {request.path}"
            if allowed:
                message += f"; allowed: {', '.join(allowed)}"
                headers["Allow"] = ", ".join(allowed)
        else:
            message = error.description or http.HTTPStatus(code).phrase
        headers.update(data.get("headers") or {})
        return error_response(code, message, headers)


def handle_unexpected(error: Exception) -> Response:
    """Anything we did not anticipate: logged with its traceback, answered with a generic 500."""
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return error_response(500, GENERIC_500)
