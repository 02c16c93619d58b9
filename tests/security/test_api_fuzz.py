"""Schemathesis against the OpenAPI document the API serves: no 5xx, and every answer as documented.

Run in-process through Schemathesis' own engine (the one its CLI uses: a coverage phase of boundary and
invalid values, then random positive and negative fuzzing) against the WSGI app, backed by the real
Redis, the Qdrant double and a local storage root in tmp_path. Jobs are recorded instead of handed to a
worker, so fuzzed jobs never run. Two deployments are fuzzed: without API keys, and with keys (requests
carry a valid key; Schemathesis' ``ignored_auth`` check also sends none and a wrong one and expects 401).

Checks: ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``,
``response_headers_conformance``, ``response_schema_conformance``, ``negative_data_rejection`` (invalid
input gets a 4xx) and ``ignored_auth``. Left out: ``positive_data_acceptance`` (a schema-valid request can
rightly be refused: a local path outside QBM_STORAGE_ROOTS, a storage id that does not exist, a restore of a
shard job without a shard; the schema cannot say that) and ``allow_header_conformance`` (see
``test_405_allow_headers_name_the_routes_methods``).

Budget: ``MAX_EXAMPLES`` per operation and generation mode keeps the whole test near a minute on 2 cores.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from api.app import create_app
from shared.runtime.config import Config
from tests.api.helpers import API
from tests.recorder import EnqueueRecorder

MAX_EXAMPLES = int(os.environ.get("QBM_FUZZ_EXAMPLES", "200"))
API_KEY = "fuzz-key-3c1d9e0a7b"
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "ignored_auth")
OFF = ("positive_data_acceptance", "allow_header_conformance", "missing_required_header", "unsupported_method",
       "use_after_free", "ensure_resource_availability")


def unreachable(response: Any) -> bool:
    """A documented 503: a dependency (a storage backend, Qdrant) that cannot be reached, said so in the body.
    Any other 5xx (a 500 above all) is still a failure."""
    body = (response.content or b"").decode("utf-8", "replace")
    return response.status_code == 503 and ("cannot connect" in body or "unreachable" in body)


def _seeded_app(config: Config, qdrant: Any, root: Path, enqueued: EnqueueRecorder) -> Any:
    """The app with something to find: a collection with a snapshot, a default local backend, a job."""
    qdrant.create_collection("alpha", points=10, size_bytes=8 * 1024, shard_number=2)
    app = create_app(config, enqueue=enqueued)
    client = app.test_client()
    headers = {"X-API-Key": API_KEY}
    assert client.post(f"{API}/collections/alpha/snapshots", headers=headers).status_code == 200
    assert client.post(f"{API}/storage", headers=headers, json={
        "name": "disk", "type": "local", "path": str(root / "disk"), "is_default": True}).status_code == 201
    assert client.post(f"{API}/jobs", headers=headers,
                       json={"type": "backup", "collection_name": "alpha"}).status_code == 201
    return app


def _run(app: Any, *, with_keys: bool) -> tuple[list[str], Counter[str], int]:
    """Fuzz every operation; returns (problems, scenarios per operation, requests made)."""
    settings: dict[str, Any] = {
        # One worker: schemathesis' worker threads compile hypothesis code concurrently, which CPython 3.11
        # sometimes fails with "AST constructor recursion depth mismatch" (an interpreter bug, not ours).
        "workers": 1,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "mode": "all"},
        "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False},
                   "coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        "checks": {**{name: {"enabled": True} for name in CHECKS}, **{name: {"enabled": False} for name in OFF}},
    }
    if with_keys:  # declared as the spec's own scheme, so ignored_auth knows what to take away
        settings["auth"] = {"openapi": {"apiKeyHeader": {"api_key": API_KEY}}}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=SchemathesisConfig.from_dict(settings))
    problems: list[str] = []
    tested: Counter[str] = Counter()
    requests = 0
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            label = event.recorder.label
            requests += len(event.recorder.interactions)
            if event.status in (Status.SKIP, Status.ERROR, Status.INTERRUPTED):
                problems.append(f"{event.phase.value} {label}: {event.status.value} ({event.skip_reason})")
                continue
            tested[label] += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status != Status.FAILURE:
                        continue
                    interaction = event.recorder.interactions.get(case_id)
                    request = interaction.request if interaction else None
                    response = interaction.response if interaction else None
                    if check.name == "not_a_server_error" and response is not None and unreachable(response):
                        continue  # the fuzzer saved an S3 backend at a made-up host: 503 is the right answer
                    failure = check.failure_info.failure if check.failure_info else ""
                    sent = (f"{request.method} {request.uri} body={(request.body or b'')[:300]!r}"
                            if request is not None else "(no request recorded)")
                    got = (f"{response.status_code} {(response.content or b'')[:300]!r}"
                           if response is not None else "(no response)")
                    problems.append(f"{check.name} on {label}: {failure}\n  request: {sent}\n  response: {got}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"engine error: {event!r}"[:2000])
    return problems, tested, requests


@pytest.fixture
def wsgi_probe_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemathesis 4.32 hands its auth probes (``ignored_auth``) the socket-level options of its requests
    transport (max_redirects, verify, cert, proxies) even when it talks to a WSGI app in-process, and
    werkzeug's client refuses them with a TypeError. They mean nothing in-process, so drop them."""
    from schemathesis.transport.wsgi import WSGITransport

    original = WSGITransport.send

    def send(self: Any, case: Any, **kwargs: Any) -> Any:
        for name in ("max_redirects", "verify", "cert", "proxies"):
            kwargs.pop(name, None)
        return original(self, case, **kwargs)

    monkeypatch.setattr(WSGITransport, "send", send)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("wsgi_probe_shim")
@pytest.mark.parametrize("with_keys", [False, True], ids=["no-auth", "api-keys"])
def test_fuzzed_requests_get_no_5xx_and_documented_answers(redis_url, key_prefix, qdrant, tmp_path, secret_key,
                                                           with_keys):
    root = tmp_path / "root"
    root.mkdir()
    enqueued = EnqueueRecorder()
    config = Config(redis_url=redis_url, redis_url_explicit=True, qdrant_url=qdrant.url, key_prefix=key_prefix,
                    storage_roots=(root,), data_dir=root, secret_keys=(secret_key,),
                    api_keys=(API_KEY,) if with_keys else ())
    app = _seeded_app(config, qdrant, root, enqueued)
    operations = {f"{method.upper()} {path}" for path, item in app.test_client().get("/openapi.json").get_json()[
        "paths"].items() for method in item if method in ("get", "put", "post", "delete", "patch")}

    started = time.monotonic()
    problems, tested, requests = _run(app, with_keys=with_keys)
    elapsed = time.monotonic() - started

    unique = list(dict.fromkeys(problems))
    assert not unique, f"{len(unique)} problem(s) in {elapsed:.0f}s:\n" + "\n".join(unique[:25])
    assert set(tested) == operations, f"not fuzzed: {sorted(operations - set(tested))}"
    # The budget was really spent (operations without parameters, like GET /cluster, run out of distinct
    # inputs at once; the others use all of MAX_EXAMPLES per generation mode).
    assert requests >= len(operations) * MAX_EXAMPLES * 0.75, requests
    print(f"schemathesis: {len(operations)} operations, {requests} requests, {elapsed:.1f}s")
