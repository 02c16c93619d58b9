"""Collection aliases as Qdrant keeps them: one table per node, or one for a whole cluster (consensus).

``POST /collections/aliases`` applies a list of actions atomically (all or none); creating an alias for a
missing collection is a 404, an alias named like an existing collection is refused, deleting or renaming a
missing alias is a 404, and dropping a collection drops its aliases (Qdrant's ``TableOfContent``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.qdrant_double import errors
from tests.qdrant_double.errors import ApiError


class AliasTable:
    """alias name -> collection name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aliases: dict[str, str] = {}

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._aliases)

    def listing(self, collection: str | None = None) -> dict[str, Any]:
        """``CollectionsAliasesResponse``: every alias, or those of one collection."""
        with self._lock:
            items = sorted(self._aliases.items())
        return {"aliases": [{"alias_name": alias, "collection_name": target} for alias, target in items
                            if collection is None or target == collection]}

    def apply(self, actions: Any, collection_exists: Callable[[str], bool]) -> None:
        """Apply ``ChangeAliasesOperation.actions``; nothing changes when one of them is refused."""
        if not isinstance(actions, list):
            raise _bad_json("missing field `actions`")
        with self._lock:
            table = dict(self._aliases)
            for action in actions:
                _apply_one(table, action, collection_exists)
            self._aliases = table

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            self._aliases = {a: c for a, c in self._aliases.items() if c != collection}


def _apply_one(table: dict[str, str], action: Any, collection_exists: Callable[[str], bool]) -> None:
    if not isinstance(action, dict) or len(action) != 1:
        raise _bad_json("actions: data did not match any variant of untagged enum AliasOperations")
    (kind, params), = action.items()
    if not isinstance(params, dict):
        raise _bad_json(f"actions: {kind}: invalid type, expected a struct")
    if kind == "create_alias":
        collection, alias = _names(params, "collection_name", "alias_name")
        if not collection_exists(collection):
            raise errors.collection_not_found(collection)
        if collection_exists(alias):
            raise errors.wrong_input(f"Collection `{alias}` already exists!")
        table[alias] = collection
    elif kind == "delete_alias":
        (alias,) = _names(params, "alias_name")
        if table.pop(alias, None) is None:
            raise errors.not_found(f"Alias {alias} not found")
    elif kind == "rename_alias":
        old, new = _names(params, "old_alias_name", "new_alias_name")
        if old not in table:
            raise errors.not_found(f"Alias {old} not found")
        table[new] = table.pop(old)
    else:
        raise _bad_json("actions: data did not match any variant of untagged enum AliasOperations")


def _names(params: dict[str, Any], *keys: str) -> tuple[str, ...]:
    values = []
    for key in keys:
        value = params.get(key)
        if not isinstance(value, str):
            raise _bad_json(f"missing field `{key}`")
        values.append(value)
    return tuple(values)


def _bad_json(description: str) -> ApiError:
    exc = errors.deserialize_error("Json", description)
    exc.zero_time = True
    return exc
