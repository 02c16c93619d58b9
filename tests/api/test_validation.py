"""The name rules in shared/intake/names.py (shared by the API, workers and scheduler)."""

from __future__ import annotations

import pytest

from shared.intake.names import (
    MAX_SHARD_ID,
    InvalidName,
    check_backup_ref,
    check_collection_name,
    check_shard_id,
    check_snapshot_name,
    is_collection_name,
)


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "x" * 255, "2026", "a..b"])
def test_valid_collection_names(name):
    assert check_collection_name(name) == name
    assert is_collection_name(name)


@pytest.mark.parametrize("name", ["", "x" * 256, "a b", "a/b", "ä", ".", "..", None, 5, "a\x00"])
def test_invalid_collection_names(name):
    with pytest.raises(InvalidName):
        check_collection_name(name)
    assert not is_collection_name(name)


@pytest.mark.parametrize("name", ["c-123-2026-11-24-02-15-00.snapshot", "x.snapshot", "a b.snapshot"])
def test_valid_snapshot_names(name):
    assert check_snapshot_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".snapshot", "x.tar", "a/b.snapshot", "a\\b.snapshot", "..snapshot", "a..b.snapshot",
     "a\x00.snapshot", "a\n.snapshot", "x" * 250 + ".snapshot", None],
)
def test_invalid_snapshot_names(name):
    with pytest.raises(InvalidName):
        check_snapshot_name(name)


@pytest.mark.parametrize("ref", ["20261124T021500Z-1a2b3c4d", "c-1-2026-11-24-02-15-00.snapshot", "x" * 200])
def test_valid_backup_refs(ref):
    assert check_backup_ref(ref) == ref


@pytest.mark.parametrize("ref", ["", "x" * 201, "a..b", "../x", "a/b", "a b", None])
def test_invalid_backup_refs(ref):
    with pytest.raises(InvalidName):
        check_backup_ref(ref)


def test_shard_ids():
    assert check_shard_id(0) == 0
    assert check_shard_id("17") == 17
    assert check_shard_id(str(MAX_SHARD_ID)) == MAX_SHARD_ID
    for bad in (-1, "-1", "1.0", "", "x", True, 1.0, MAX_SHARD_ID + 1, str(MAX_SHARD_ID + 1), "١"):
        with pytest.raises(InvalidName):
            check_shard_id(bad)
