"""Tests against a real Qdrant server (``QBM_TEST_QDRANT_BIN``); marked ``real_qdrant``, skipped without it."""

import pytest

# Failures inside the shared checks show the compared values, as they do in the tests themselves.
pytest.register_assert_rewrite("tests.real_qdrant.api_checks", "tests.real_qdrant.data", "tests.real_qdrant.helpers")
