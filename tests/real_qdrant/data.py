"""Real data in a real Qdrant: collections of 128-d Cosine vectors with payloads and a payload index, uploaded in
batches, and ways to read every point back to compare a restore with what was backed up."""

from __future__ import annotations

import functools
import math
import random
from typing import Any

import requests

from tests.real_qdrant.qdrant_process import QdrantNode
from tests.waiting import wait_until

DIM = 128
POINTS = 20_000
BATCH = 1_000
INDEXED_FIELD = "group"

Point = dict[str, Any]
#: id -> (vector, payload), as scrolled from Qdrant.
Contents = dict[int, tuple[list[float], dict[str, Any]]]


@functools.cache
def make_points(count: int = POINTS, seed: int = 7) -> tuple[Point, ...]:
    """``count`` points with random vectors (6 decimals, so the JSON stays small) and payloads; cached per
    session, since building them costs more than uploading them."""
    rng = random.Random(seed)
    return tuple(
        {"id": i, "vector": [round(rng.uniform(-1.0, 1.0), 6) for _ in range(DIM)],
         "payload": {"group": i % 10, "text": f"doc {i}", "n": i}}
        for i in range(count)
    )


def create_collection(node: QdrantNode, name: str, *, shard_number: int = 3, replication_factor: int = 1,
                      points: int = POINTS, index: bool = True) -> None:
    """Create ``name`` with ``points`` points, uploaded in batches with ``wait=true``, and (``index``) an integer
    payload index on ``group``."""
    node.request("PUT", f"/collections/{name}?timeout=60", json={
        "vectors": {"size": DIM, "distance": "Cosine"},
        "shard_number": shard_number,
        "replication_factor": replication_factor,
    })
    if index:
        node.request("PUT", f"/collections/{name}/index?wait=true",
                     json={"field_name": INDEXED_FIELD, "field_schema": "integer"})
    upload(node, name, make_points(points))


def upload(node: QdrantNode, name: str, points: tuple[Point, ...] | list[Point]) -> None:
    for start in range(0, len(points), BATCH):
        node.request("PUT", f"/collections/{name}/points?wait=true",
                     json={"points": list(points[start:start + BATCH])})


def drop_collection(node: QdrantNode, name: str) -> None:
    node.request("DELETE", f"/collections/{name}?timeout=60", expect=(200, 404))


def exact_count(node: QdrantNode, name: str) -> int:
    return int(node.result("POST", f"/collections/{name}/points/count", json={"exact": True})["count"])


def collection_exists(node: QdrantNode, name: str) -> bool:
    return node.request("GET", f"/collections/{name}", expect=(200, 404)).status_code == 200


def all_replicas_active(node: QdrantNode, name: str) -> bool:
    info = node.result("GET", f"/collections/{name}/cluster")
    shards = info["local_shards"] + info["remote_shards"]
    return bool(shards) and all(s["state"] == "Active" for s in shards) and not info.get("shard_transfers")


def wait_replicas_active(nodes: list[QdrantNode], name: str, timeout: float = 60) -> None:
    """Every peer knows the collection and sees every replica of it Active, with no transfer running."""
    for node in nodes:
        wait_until(lambda n=node: collection_exists(n, name) and all_replicas_active(n, name), timeout,
                   f"all replicas of {name} Active on {node.name}", details=node.log_tail, interval=0.1)


def scroll_all(url: str, key: str, collection: str, *, page: int = 2_000) -> Contents:
    """Every point of ``collection`` with its vector and payload: id -> (vector, payload)."""
    found: Contents = {}
    offset: Any = None
    with requests.Session() as session:
        session.headers["api-key"] = key
        while True:
            body: dict[str, Any] = {"limit": page, "with_payload": True, "with_vector": True}
            if offset is not None:
                body["offset"] = offset
            resp = session.post(f"{url}/collections/{collection}/points/scroll", json=body, timeout=60)
            assert resp.status_code == 200, resp.text
            result = resp.json()["result"]
            for point in result["points"]:
                found[point["id"]] = (point["vector"], point["payload"])
            offset = result.get("next_page_offset")
            if offset is None:
                return found


def differences(before: Contents, after: Contents, tolerance: float = 1e-6) -> list[str]:
    """What differs between two scrolls (ids, payloads, vectors beyond ``tolerance``); at most 10 lines."""
    out: list[str] = []
    if set(before) != set(after):
        missing, extra = sorted(set(before) - set(after)), sorted(set(after) - set(before))
        out.append(f"ids differ: {len(missing)} missing (e.g. {missing[:5]}), {len(extra)} extra (e.g. {extra[:5]})")
    for pid in sorted(set(before) & set(after)):
        (v1, p1), (v2, p2) = before[pid], after[pid]
        if p1 != p2:
            out.append(f"point {pid}: payload {p1!r} != {p2!r}")
        elif len(v1) != len(v2) or any(not math.isclose(a, b, abs_tol=tolerance) for a, b in zip(v1, v2,
                                                                                                  strict=True)):
            out.append(f"point {pid}: vector differs")
        if len(out) >= 10:
            break
    return out


def normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]
