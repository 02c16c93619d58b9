"""Everything a test's key prefix holds in Redis, as bytes, for "this secret is nowhere in Redis" checks."""

from __future__ import annotations

import redis


def dump_prefix(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key name under ``prefix`` and every value in it, whatever the type (hash fields and values,
    list/set/sorted-set members, stream entries, strings)."""
    out: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                out += [field, value]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _id, fields in client.xrange(key):
                for field, value in fields.items():
                    out += [field, value]
        elif kind != "none":
            raise AssertionError(f"unexpected Redis type {kind} at {key!r}")
    return out


def occurrences(client: redis.Redis, prefix: str, needle: str) -> list[bytes]:
    """The keys or values under ``prefix`` that contain ``needle``."""
    raw = needle.encode()
    return [item for item in dump_prefix(client, prefix) if raw in item]
