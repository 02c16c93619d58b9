"""Qdrant's error kinds, with the status codes and message prefixes a real node uses.

Qdrant renders its internal errors as ``"<Kind prefix>: <description>"`` (for example
``Not found: Collection `foo` doesn't exist!``). The double builds every error through these helpers so
the prefixes and codes stay the ones in Qdrant's source (its REST error layer).
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer: HTTP status plus Qdrant's full message text (prefix included)."""

    def __init__(self, status: int, message: str, *, zero_time: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # Errors from Qdrant's request extractors (bad query/body) carry "time": 0.0.
        self.zero_time = zero_time


def not_found(description: str) -> ApiError:
    return ApiError(404, f"Not found: {description}")


def collection_not_found(name: str) -> ApiError:
    return not_found(f"Collection `{name}` doesn't exist!")


def snapshot_not_found(name: str) -> ApiError:
    # CollectionError::NotFound{what} displays as "{what} not found", then StorageError adds the prefix.
    return not_found(f"Snapshot {name} not found")


def shard_not_found(shard_id: int) -> ApiError:
    return not_found(f"shard {shard_id} not found")


def shard_key_text(key: object) -> str:
    """A shard key as Qdrant's messages show it (``impl Display for ShardKey``): a keyword in double quotes, a
    number as it is."""
    return f'"{key}"' if isinstance(key, str) else str(key)


def wrong_input(description: str) -> ApiError:
    return ApiError(400, f"Wrong input: {description}")


def bad_request(description: str) -> ApiError:
    return ApiError(400, f"Bad request: {description}")


def forbidden(description: str) -> ApiError:
    return ApiError(403, f"Forbidden: {description}")


def service_error(description: str) -> ApiError:
    return ApiError(500, f"Service internal error: {description}")


def validation_error(where: str, description: str) -> ApiError:
    """422 for values that parse but fail validation (e.g. a checksum that is not 64 hex chars)."""
    return ApiError(422, f"Validation error in {where}: {description}")


def deserialize_error(where: str, description: str) -> ApiError:
    """400 for values that cannot be parsed at all (bad JSON, `wait=maybe`)."""
    return ApiError(400, f"{where} deserialize error: {description}")
