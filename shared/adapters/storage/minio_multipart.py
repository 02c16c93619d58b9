"""The minio client's private multipart calls, fenced in one place.

minio's public ``put_object`` cannot stream parts from our own reused buffers with several in flight, nor abort
one named upload, so the S3 backend drives a multipart upload with the client's ``_create_multipart_upload``,
``_upload_part``, ``_complete_multipart_upload``, ``_abort_multipart_upload`` and ``_list_multipart_uploads``.
They are not part of minio's API and may change in any release: everything QBM calls is here, and
``tests/test_third_party_fences.py`` fails loudly (naming the method) if an upgrade renames one or changes the
parameters used below. The supported range is pinned in pyproject.toml.
"""

from __future__ import annotations

import inspect

from minio import Minio
from minio.datatypes import ListMultipartUploadsResult, Part

#: The private methods used, with the parameters QBM passes, in order.
EXPECTED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "_create_multipart_upload": ("bucket_name", "object_name", "headers"),
    "_upload_part": ("bucket_name", "object_name", "data", "headers", "upload_id", "part_number"),
    "_complete_multipart_upload": ("bucket_name", "object_name", "upload_id", "parts"),
    "_abort_multipart_upload": ("bucket_name", "object_name", "upload_id"),
    "_list_multipart_uploads": ("bucket_name", "max_uploads", "prefix"),
}


def mismatches() -> list[str]:
    """What of :data:`EXPECTED_PARAMETERS` the installed minio no longer has (empty when all is in place)."""
    problems = []
    for name, params in EXPECTED_PARAMETERS.items():
        method = getattr(Minio, name, None)
        if method is None:
            problems.append(f"minio.Minio.{name} is gone")
            continue
        have = inspect.signature(method).parameters
        problems += [f"minio.Minio.{name} has no parameter {p!r}" for p in params if p not in have]
    return problems


class Multipart:
    """One bucket's multipart uploads through ``client``'s private calls."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self._client, self.bucket = client, bucket

    def create(self, key: str, content_type: str = "application/octet-stream") -> str:
        """Start an upload; returns its upload id."""
        return self._client._create_multipart_upload(self.bucket, key, {"Content-Type": content_type})

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray) -> str:
        """Send part ``number`` (from 1); returns its ETag."""
        return self._client._upload_part(self.bucket, key, data, None, upload_id, number)  # type: ignore[arg-type]

    def complete(self, key: str, upload_id: str, parts: list[Part]) -> None:
        self._client._complete_multipart_upload(self.bucket, key, upload_id, parts)

    def abort(self, key: str, upload_id: str) -> None:
        self._client._abort_multipart_upload(self.bucket, key, upload_id)

    def list(self, prefix: str, max_uploads: int = 1000) -> ListMultipartUploadsResult:
        """Incomplete uploads whose keys start with ``prefix`` (one page)."""
        return self._client._list_multipart_uploads(self.bucket, prefix=prefix, max_uploads=max_uploads)
