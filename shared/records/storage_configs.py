"""Where backups go: named storage configurations (a local directory or an S3 bucket), kept in Redis.

Layout: one hash ``{prefix}storage:{id}`` per config (absent field = ``None``), a sorted set
``{prefix}storages:all`` of ids scored by creation time in microseconds (so :meth:`StorageConfigStore.list`
is ordered without sorting in Python), and one string ``{prefix}storages:default`` holding the default
config's id. ``is_default`` is derived from that one key rather than stored per config, so "at most one
default" holds by construction and changing the default is a single atomic SET.

The S3 secret key is stored in the hash field ``s3_secret_key`` but never appears in a public dict; only
``get(..., with_secret=True)`` (used to build a storage client) returns it. It passes through
:meth:`StorageConfigStore._encode_secret` / :meth:`StorageConfigStore._decode_secret` on the way in and
out, which encrypt it with the QBM_SECRET_KEY keys given to the store (:mod:`shared.adapters.secret_box`): Redis only
ever holds a Fernet token. A store built without keys refuses to store a secret (SecretKeyMissing).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from shared.adapters.secret_box import SecretBox
from shared.records.job_store import StorageRef
from shared.runtime.timeutil import next_micros, text, to_iso

STORAGE_TYPES = ("local", "s3")

#: Contract fields, in the contract's order.
PUBLIC_FIELDS = (
    "id",
    "name",
    "type",
    "path",
    "s3_endpoint",
    "s3_bucket",
    "s3_region",
    "s3_access_key",
    "is_default",
    "created_at",
    "updated_at",
)
SECRET_FIELD = "s3_secret_key"
#: Fields a caller may set at creation and change later (plus ``is_default``; ``type`` only at creation).
EDITABLE_FIELDS = ("name", "path", "s3_endpoint", "s3_bucket", "s3_region", "s3_access_key", SECRET_FIELD)
_SCORE_FIELD = "_created_us"


class StorageConfigNotFound(LookupError):
    """No storage config with this id."""

    def __init__(self, storage_id: str) -> None:
        super().__init__(f"storage config {storage_id} not found")
        self.storage_id = storage_id


# KEYS: hash, default key. ARGV: id, updated_at, type given ('' = not given), default action
# ('set' | 'clear' | ''), n pairs to set, 2n values, names of fields to delete.
# Returns {'missing'}, {'type', current type} or {'ok', HGETALL, default id}.
_UPDATE_LUA = """
local key, default_key = KEYS[1], KEYS[2]
local id, updated_at, new_type, default_action = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current_type = redis.call('HGET', key, 'type')
if not current_type then return {'missing'} end
if new_type ~= '' and new_type ~= current_type then return {'type', current_type} end
local n = tonumber(ARGV[5])
for i = 0, n - 1 do redis.call('HSET', key, ARGV[6 + 2 * i], ARGV[7 + 2 * i]) end
for i = 6 + 2 * n, #ARGV do redis.call('HDEL', key, ARGV[i]) end
redis.call('HSET', key, 'updated_at', updated_at)
if default_action == 'set' then
  redis.call('SET', default_key, id)
elseif default_action == 'clear' and redis.call('GET', default_key) == id then
  redis.call('DEL', default_key)
end
return {'ok', redis.call('HGETALL', key), redis.call('GET', default_key)}
"""

# KEYS: hash, index, default key. ARGV: id. Returns 0 when there was no such config.
_DELETE_LUA = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
"""






class StorageConfigStore:
    """CRUD for storage configs; see the module docstring for the Redis layout and the secret's handling."""

    def __init__(self, redis: Redis, prefix: str = "qbm:", secret_keys: Sequence[str] = ()) -> None:
        self._redis = redis
        self._prefix = prefix
        self._box = SecretBox(secret_keys)
        self._index_key = f"{prefix}storages:all"
        self._default_key = f"{prefix}storages:default"
        self._update = redis.register_script(_UPDATE_LUA)
        self._delete = redis.register_script(_DELETE_LUA)

    def _key(self, storage_id: str) -> str:
        return f"{self._prefix}storage:{storage_id}"

    # --- the one place the secret is transformed: encrypted at rest ---

    def _encode_secret(self, plain: str) -> str:
        return self._box.encrypt(plain, what="S3 secret key")

    def _decode_secret(self, stored: str) -> str:
        return self._box.decrypt(stored, what="S3 secret key")

    # --- conversions ---

    def _to_dict(self, raw: dict[Any, Any], default_id: Any, *, with_secret: bool) -> dict | None:
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields.get("id"):
            return None
        config: dict[str, Any] = {name: fields.get(name) for name in PUBLIC_FIELDS}
        config["is_default"] = fields["id"] == text(default_id)
        if with_secret:
            stored = fields.get(SECRET_FIELD)
            config[SECRET_FIELD] = self._decode_secret(stored) if stored is not None else None
        return config

    def _check_fields(self, data: dict, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown storage config field(s): {', '.join(unknown)}")
        for name in EDITABLE_FIELDS:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {type(value).__name__}")
        if "is_default" in data and not isinstance(data["is_default"], bool):
            raise ValueError("is_default must be true or false")

    def _stored_value(self, name: str, value: str) -> str:
        return self._encode_secret(value) if name == SECRET_FIELD else value

    # --- API ---

    def create(self, data: dict) -> dict:
        """Store a new config (``data`` already validated by the caller) and return its public dict.

        Hash, index entry and, with ``is_default: true``, the default pointer are written in one MULTI.
        """
        self._check_fields(data, ("type", "is_default", *EDITABLE_FIELDS))
        if data.get("type") not in STORAGE_TYPES:
            choices = ", ".join(STORAGE_TYPES)
            raise ValueError(f"storage type must be one of {choices}, got {data.get('type')!r}")
        if not data.get("name"):
            raise ValueError("storage config needs a name")
        micros = next_micros()
        now = to_iso(datetime.fromtimestamp(micros // 1_000_000, UTC))
        storage_id = f"st_{secrets.token_hex(6)}"
        fields = {"id": storage_id, "type": data["type"], "created_at": now, "updated_at": now}
        fields[_SCORE_FIELD] = str(micros)
        for name in EDITABLE_FIELDS:
            if data.get(name) is not None:
                fields[name] = self._stored_value(name, data[name])

        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._key(storage_id), mapping=fields)
        pipe.zadd(self._index_key, {storage_id: micros})
        if data.get("is_default"):
            pipe.set(self._default_key, storage_id)
        pipe.hgetall(self._key(storage_id))
        pipe.get(self._default_key)
        *_, raw, default_id = pipe.execute()
        return self._to_dict(raw, default_id, with_secret=False) or {}

    def get(self, storage_id: str, *, with_secret: bool = False) -> dict:
        """The public dict; with ``with_secret=True`` also ``s3_secret_key`` (for building a client only,
        never for a response). Raises :class:`StorageConfigNotFound`."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self._key(storage_id))
        pipe.get(self._default_key)
        raw, default_id = pipe.execute()
        config = self._to_dict(raw, default_id, with_secret=with_secret)
        if config is None:
            raise StorageConfigNotFound(storage_id)
        return config

    def list(self) -> list[dict]:
        """All configs as public dicts, oldest first."""
        ids = [text(i) for i in self._redis.zrange(self._index_key, 0, -1)]
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=True)
        for storage_id in ids:
            pipe.hgetall(self._key(storage_id or ""))
        pipe.get(self._default_key)
        *raws, default_id = pipe.execute()
        configs = (self._to_dict(raw, default_id, with_secret=False) for raw in raws)
        return [c for c in configs if c is not None]

    def update(self, storage_id: str, changes: dict) -> dict:
        """Apply a partial update atomically and return the public dict.

        Only keys present in ``changes`` are touched; a key with value ``None`` clears that field.
        ``type`` cannot change (ValueError; repeating the current type is accepted). ``is_default: true``
        makes this the default; ``is_default: false`` clears the default only if it is still this one,
        so it never undoes another config becoming default meanwhile.
        Raises :class:`StorageConfigNotFound`.
        """
        self._check_fields(changes, ("type", "is_default", *EDITABLE_FIELDS))
        new_type = changes.get("type") or ""
        action = ""
        if "is_default" in changes:
            action = "set" if changes["is_default"] else "clear"
        set_args: list[str] = []
        del_fields: list[str] = []
        for name in EDITABLE_FIELDS:
            if name not in changes:
                continue
            if changes[name] is None:
                del_fields.append(name)
            else:
                set_args += [name, self._stored_value(name, changes[name])]
        now = to_iso(datetime.now(UTC))
        reply = self._update(
            keys=[self._key(storage_id), self._default_key],
            args=[storage_id, now, new_type, action, len(set_args) // 2, *set_args, *del_fields],
        )
        outcome = text(reply[0])
        if outcome == "missing":
            raise StorageConfigNotFound(storage_id)
        if outcome == "type":
            raise ValueError(
                f"the type of storage config {storage_id} cannot change (it is {text(reply[1])}); "
                "create a new storage config instead"
            )
        flat = reply[1]
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return self._to_dict(raw, reply[2], with_secret=False) or {}

    def delete(self, storage_id: str) -> None:
        """Remove the config; if it was the default, there is no default afterwards.
        Raises :class:`StorageConfigNotFound`."""
        keys = [self._key(storage_id), self._index_key, self._default_key]
        done = self._delete(keys=keys, args=[storage_id])
        if not int(done):
            raise StorageConfigNotFound(storage_id)

    def default_id(self) -> str | None:
        """The default config's id, or None: one GET (``delete()`` clears the pointer with the config, in one
        script, so a pointer never outlives its config)."""
        return text(self._redis.get(self._default_key))

    def job_ref(self) -> StorageRef:
        """Where ``JobStore.create`` checks a new job's backend (or finds the default) as it stores the job."""
        return StorageRef(config_prefix=self._key(""), default_key=self._default_key)

    def count(self) -> int:
        return int(self._redis.zcard(self._index_key))

    def rotate_secrets(self) -> tuple[int, int]:
        """Re-encrypt every stored secret with the first key (and encrypt any stored in the clear by an older
        version). Returns (rewritten, already current). Each field is replaced only if it still holds the
        value that was read, so a concurrent update is never overwritten with an older secret."""
        rewritten = current = 0
        for storage_id in (text(i) or "" for i in self._redis.zrange(self._index_key, 0, -1)):
            key = self._key(storage_id)
            stored = text(self._redis.hget(key, SECRET_FIELD))
            if stored is None:
                continue
            if self._box.is_current(stored):
                current += 1
                continue
            fresh = self._box.rotate(stored, what=f"S3 secret key of storage backend {storage_id}")
            if self._replace_secret(key, stored, fresh):
                rewritten += 1
        return rewritten, current

    def _replace_secret(self, key: str, old: str, new: str) -> bool:
        with self._redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if text(pipe.hget(key, SECRET_FIELD)) != old:
                    return False
                pipe.multi()
                pipe.hset(key, SECRET_FIELD, new)
                pipe.execute()
            except WatchError:
                return False
        return True


__all__ = ["PUBLIC_FIELDS", "STORAGE_TYPES", "StorageConfigNotFound", "StorageConfigStore"]
