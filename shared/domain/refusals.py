"""The sentences a job that cannot work is refused with -- by the worker step that finds out, and by the
submission check that finds out earlier (:mod:`shared.intake.preflight`) -- so a person reads the same words
whichever way they meet the problem."""

from __future__ import annotations

from shared.domain.manifest import Manifest


def no_collection(collection: str, qdrant_message: str) -> str:
    return f"Qdrant has no collection {collection!r}: {qdrant_message}"


def shard_not_on_node(collection: str, shard_id: int, node_url: str) -> str:
    return (f"shard {shard_id} of collection {collection!r} is not on the Qdrant node at {node_url}; shard backups "
            "must be taken on the node that holds the shard")


def no_shard(collection: str, shard_id: int, shard_ids: list[int]) -> str:
    return (f"collection {collection!r} has no shard {shard_id} on any Qdrant peer (its shards: "
            f"{', '.join(map(str, shard_ids)) or 'none'})")


def wrong_kind(manifest: Manifest, job_type: str, shard_id: int | None) -> str | None:
    """Why ``manifest``'s backup cannot be restored by a ``job_type`` job (of ``shard_id``); None when it can."""
    if job_type == "shard_restore":
        if manifest.shard_id is None:
            return f"backup {manifest.backup_id} is a collection backup; use a restore job"
        if shard_id != manifest.shard_id:
            return f"backup {manifest.backup_id} holds shard {manifest.shard_id}, not shard {shard_id}"
        return None
    if manifest.shard_id is not None:
        return f"backup {manifest.backup_id} is a shard backup; use a shard_restore job"
    return None


def target_exists(target: str) -> str:
    """Why a collection restore without ``metadata.replace: true`` is refused when its target exists."""
    return (f"collection {target!r} already exists on Qdrant and a restore would replace it; set "
            "metadata.replace to true to replace it, or restore under another name with metadata.target_collection")
