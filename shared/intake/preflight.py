"""What can be checked cheaply before a job is stored, so that a request that cannot work is refused at once
(404/409/422, with the sentence the job would have failed with) instead of answering 201 and failing a moment later.

Checked: a backup's collection exists on Qdrant, a shard backup's shard is on the node QBM talks to, a restore's
backup exists in the named storage and is of the job's kind, and a collection restore whose target collection
exists says ``metadata.replace: true`` (409 otherwise: replacing a collection is never a default). A check that
cannot be made -- Qdrant or the storage backend not answering -- never blocks the submission: the job is stored
and its ``metadata.unchecked`` says what could not be checked and why; the worker finds out for itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.adapters.qdrant import QdrantClient, QdrantError
from shared.adapters.storage import Storage, StorageError
from shared.adapters.topology import parse_layout
from shared.domain import refusals
from shared.domain.manifest import ManifestError, read_manifest
from shared.intake.submit import InvalidJobRequest

OpenStorage = Callable[[str], tuple[dict, Storage]]


class JobRefused(InvalidJobRequest):
    """The job would certainly fail: ``status`` (404: what it names does not exist; 422: it does, but does not
    fit), ``field`` the part of the request at fault, ``message`` the sentence the job would have failed with."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(field, message)
        self.status = status


class Preflight:
    def __init__(self, qdrant: QdrantClient, open_storage: OpenStorage) -> None:
        self.qdrant, self.open_storage = qdrant, open_storage

    def __call__(self, request: dict[str, Any], storage_id: str | None) -> str | None:
        """Raise :class:`JobRefused`, or return what could not be checked (None: everything was)."""
        job_type, collection = request["type"], request["collection_name"]
        if job_type in ("backup", "shard_backup"):
            return self._backup(collection, request.get("shard_id"))
        metadata = request.get("metadata") or {}
        unchecked = [self._restore(job_type, collection, request["snapshot_name"], request.get("shard_id"), storage_id)]
        if job_type == "restore" and metadata.get("replace") is not True:
            unchecked.append(self._target_free(metadata.get("target_collection") or collection))
        return "; ".join(note for note in unchecked if note) or None

    def _target_free(self, target: str) -> str | None:
        try:
            self.qdrant.collection_info(target)
        except QdrantError as exc:
            if exc.status == 404:
                return None
            return f"whether collection {target!r} exists could not be checked on Qdrant at submission: {exc.message}"
        raise JobRefused(409, "metadata.replace", refusals.target_exists(target))

    def _backup(self, collection: str, shard_id: int | None) -> str | None:
        try:
            if shard_id is None:
                self.qdrant.collection_info(collection)
                return None
            layout = parse_layout(collection, self.qdrant.collection_cluster_info(collection))
        except QdrantError as exc:
            if exc.status == 404:
                raise JobRefused(404, "collection_name", refusals.no_collection(collection, exc.message)) from None
            return f"the collection could not be checked on Qdrant at submission: {exc.message}"
        # In a cluster the worker talks to whichever peer holds the shard (its replicas are in the layout).
        if shard_id not in layout.shards:
            raise JobRefused(422, "shard_id", refusals.no_shard(collection, shard_id, sorted(layout.shards)))
        return None

    def _restore(self, job_type: str, collection: str, backup_id: str, shard_id: int | None,
                 storage_id: str | None) -> str | None:
        if storage_id is None:
            return None  # no backend at all: the submitter refuses that itself
        try:
            _, storage = self.open_storage(storage_id)
            manifest = read_manifest(storage, collection, backup_id)
        except ManifestError as exc:
            raise JobRefused(404, "snapshot_name", str(exc)) from None
        except (StorageError, LookupError) as exc:
            return f"the backup could not be checked in storage backend {storage_id} at submission: {exc}"
        refused = refusals.wrong_kind(manifest, job_type, shard_id)
        if refused:
            raise JobRefused(422, "snapshot_name", refused)
        return None
