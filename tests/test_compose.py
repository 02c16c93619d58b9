"""compose/docker-compose.yml as Docker Compose and as `qbm` would see it -- without a Docker engine.

No engine runs where these tests run, so the file is checked twice over instead: against the Compose
Specification's JSON schema (taken from Docker Compose v2.40.3 itself, tests/fixtures/compose_spec.json),
after the same variable interpolation Compose performs with the values of compose/.env.example; and
against QBM: every service command must parse as a `qbm` command line, every QBM_* variable must be one
the configuration reads and must validate, ports and host names must agree with each other.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from qbm import cli, healthcheck
from shared.runtime.config import load_config

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose" / "docker-compose.yml"
ENV_EXAMPLE = REPO / "compose" / ".env.example"
DOCKERFILE = REPO / "compose" / "Dockerfile"
SCHEMA = REPO / "tests" / "fixtures" / "compose_spec.json"

QBM_ROLES = {"api": "api", "worker": "worker", "scheduler": "scheduler"}
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: Any, env: dict[str, str], missing: set[str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` rules, applied recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        current = env.get(name)
        if operator in (":-", "-"):
            return current if current else argument
        if not current:
            missing.add(name)
            return ""
        return current

    return _VARIABLE.sub(substitute, value)


#: Left empty in .env.example on purpose: the user must generate them (compose refuses to start without).
GENERATED = {"QBM_SECRET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()}


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    """The values of .env.example, with the ones a user must generate generated as they would be."""
    values = read_env_file(ENV_EXAMPLE)
    assert {name for name, value in values.items() if not value} == set(GENERATED)
    return {**values, **{name: make() for name, make in GENERATED.items()}}


@pytest.fixture(scope="module")
def compose(env_example: dict[str, str]) -> dict:
    missing: set[str] = set()
    resolved = interpolate(yaml.safe_load(COMPOSE.read_text()), env_example, missing)
    assert not missing, f"variables without a default that compose/.env.example does not set: {missing}"
    return resolved


@pytest.fixture(scope="module")
def qbm_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == "qbm:local"}


class Recording(dict):
    """An environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


@pytest.fixture(scope="module")
def known_variables() -> set[str]:
    """Every QBM_* variable QBM reads: load_config's, and the CLI's defaults for its options."""
    recording = Recording()
    load_config(recording)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", recording)
        cli.build_parser()
    return {name for name in recording.asked if name.startswith("QBM_")}


def test_compose_file_is_valid_against_the_compose_specification(compose: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_schema_catches_a_broken_file(compose: dict) -> None:
    """The check above can fail: a misspelt key and a wrong type are both reported."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["helthcheck"] = {"test": ["CMD", "true"]}
    broken["services"]["redis"]["restart"] = 3
    messages = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)]
    assert any("helthcheck" in m for m in messages) and any("3 is not of type" in m for m in messages)


def test_services_images_are_pinned(compose: dict) -> None:
    services = compose["services"]
    assert {"qdrant", "redis", "minio", "minio-init", "api", "worker", "scheduler"} <= set(services)
    assert re.fullmatch(r"qdrant/qdrant:v1\.19\.\d+", services["qdrant"]["image"])
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+", services["redis"]["image"])
    assert re.fullmatch(r"minio/minio:RELEASE\.[0-9T:-]+Z", services["minio"]["image"])
    assert re.fullmatch(r"minio/mc:RELEASE\.[0-9T:-]+Z", services["minio-init"]["image"])
    # Data lives on volumes; Redis persists with AOF.
    for name, target in (("qdrant", "/qdrant/storage"), ("redis", "/data"), ("minio", "/data")):
        assert any(v.endswith(f":{target}") for v in services[name]["volumes"]), name
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"


def test_every_service_is_health_checked_and_started_in_order(compose: dict) -> None:
    services = compose["services"]
    one_shot = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shot == {"minio-init"}
    for name, svc in services.items():
        if name not in one_shot:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, how in (svc.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert how["condition"] == expected, (name, dependency, how)
    for name in QBM_ROLES:
        assert set(services[name]["depends_on"]) == {"redis", "qdrant", "minio-init"}


def test_qbm_commands_are_what_qbm_accepts(qbm_services: dict[str, dict]) -> None:
    # The image runs `qbm` with the service's command as its arguments.
    entrypoint = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT"))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT").strip()) == ["qbm"]
    assert set(qbm_services) == set(QBM_ROLES)
    parser = cli.build_parser()
    for name, svc in qbm_services.items():
        args = parser.parse_args(svc["command"])
        assert args.command == QBM_ROLES[name]
        test = svc["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "qbm.healthcheck"], name
        assert healthcheck.build_parser().parse_args(test[4:]).role == QBM_ROLES[name]
    with pytest.raises(SystemExit):  # and parse_args does refuse what qbm does not accept
        parser.parse_args(["worker", "--queues", "everything"])


def test_qbm_environment_is_what_qbm_reads_and_valid(qbm_services: dict[str, dict], compose: dict,
                                                     known_variables: set[str], env_example: dict) -> None:
    services = compose["services"]
    assert {"QBM_REDIS_URL", "QBM_DEFAULT_S3_SECRET_KEY", "QBM_WORKER_METRICS_PORT"} <= known_variables
    for name, svc in qbm_services.items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        unknown = {k for k in env if k.startswith("QBM_")} - known_variables
        assert not unknown, f"{name} sets variables QBM does not read: {unknown}"
        config = load_config(env)  # raises ConfigError for a bad value
        # Every host the service is pointed at is a service of this file.
        for url in (config.redis_url, config.qdrant_url, config.default_s3_endpoint):
            assert urlparse(url).hostname in services, (name, url)
        assert config.default_s3_bucket and config.default_s3_secret_key and config.api_keys
        assert config.secret_keys == (env_example["QBM_SECRET_KEY"],)
        # The default bucket QBM registers is the one minio-init creates, with the user it creates.
        init_env = services["minio-init"]["environment"]
        assert config.default_s3_bucket == init_env["BUCKET"]
        assert (config.default_s3_access_key, config.default_s3_secret_key) == (init_env["ACCESS_KEY"],
                                                                                 init_env["SECRET_KEY"])
        assert config.qdrant_api_key == services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"]
        assert config.storage_roots == (config.data_dir,) and any(
            v.endswith(f":{config.data_dir}") for v in svc["volumes"])
    unknown = {k for k in env_example if k.startswith("QBM_")} - known_variables
    assert not unknown, f".env.example sets QBM_* variables QBM does not read: {unknown}"


def test_ports_agree_and_workers_scale(qbm_services: dict[str, dict]) -> None:
    api = load_config({k: str(v) for k, v in qbm_services["api"]["environment"].items()})
    assert api.api_host == "0.0.0.0"
    published = [p.rsplit(":", 1) for p in qbm_services["api"]["ports"]]
    assert [container for _, container in published] == [str(api.api_port)]

    worker_svc = qbm_services["worker"]
    worker = load_config({k: str(v) for k, v in worker_svc["environment"].items()})
    # `docker compose up --scale worker=4` needs: no fixed container name, no host port.
    assert "container_name" not in worker_svc and "ports" not in worker_svc
    assert worker.worker_metrics_port and [str(worker.worker_metrics_port)] == worker_svc["expose"]
    scheduler_svc = qbm_services["scheduler"]
    assert "container_name" not in scheduler_svc and "ports" not in scheduler_svc
    assert scheduler_svc["deploy"]["replicas"] == 2  # the leader lease decides which one fires


def test_image_contains_every_package(qbm_services: dict[str, dict]) -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)
    copied = {line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY")}
    for package in re.findall(r'"(\w+)\*"', packages):
        assert package in copied, f"compose/Dockerfile does not COPY {package}"
    assert {"pyproject.toml", "api"} <= copied
