"""The package metadata builds without setuptools' deprecation warnings (a ``license = {text = ...}`` table made
every build print one six times): the licence is an SPDX expression, which setuptools >= 77 reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_licence_is_an_spdx_expression_read_by_a_setuptools_that_knows_it():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
    assert not any(c.startswith("License ::") for c in pyproject["project"].get("classifiers", []))


def test_the_wheel_carries_every_dashboard_file():
    """Each non-Python file under api/dashboard matches the package-data patterns of pyproject.toml (the wheel
    built from it was checked to contain them: `pip wheel .`)."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    root = REPO / "api" / "dashboard"
    included = {p for pattern in patterns["api.dashboard"] for p in root.glob(pattern)}
    files = {p for p in root.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts}
    assert files and files <= included, sorted(str(p.relative_to(root)) for p in files - included)
