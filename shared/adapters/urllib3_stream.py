"""The read below urllib3, fenced in one place.

A snapshot download is read straight from the socket into the caller's reused buffer
(:meth:`shared.adapters.qdrant.SnapshotDownload.readinto`). urllib3's own ``read`` copies every chunk, so the
download reads from the standard library's ``http.client.HTTPResponse`` that urllib3 keeps as the private
``_fp`` of its response. Nothing else in QBM touches urllib3's internals. When they are not as expected (an
upgrade moved them, or urllib3 already read from the body) :func:`undecoded_stream` answers None and the
download falls back to urllib3's decoding read: slower, same bytes. ``tests/test_third_party_fences.py``
fails loudly if an upgrade makes the fast path unreachable, rather than every backup silently slowing down.
"""

from __future__ import annotations

import http.client

import requests


def undecoded_stream(response: requests.Response) -> http.client.HTTPResponse | None:
    """The ``http.client`` response under urllib3's (``raw._fp``, the same since urllib3 1.x), when nothing was
    read through urllib3 yet; else None."""
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse) or getattr(raw, "_fp_bytes_read", 1):
        return None
    return fp
