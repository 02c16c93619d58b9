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
