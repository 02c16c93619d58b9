"""StorageConfigStore against a real Redis: configs, the single default, and keeping the S3 secret private."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from shared.records.storage_configs import PUBLIC_FIELDS, StorageConfigNotFound, StorageConfigStore

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def default_of(store: StorageConfigStore, *, with_secret: bool = False) -> dict | None:
    """The default config, as the API finds it: the default pointer, then that config."""
    default_id = store.default_id()
    return store.get(default_id, with_secret=with_secret) if default_id else None


@pytest.fixture
def store(redis_client: redis.Redis, key_prefix: str, secret_key: str) -> StorageConfigStore:
    return StorageConfigStore(redis_client, key_prefix, (secret_key,))


def s3_data(**overrides: object) -> dict:
    data = {
        "name": "offsite",
        "type": "s3",
        "s3_endpoint": "https://s3.example.com",
        "s3_bucket": "backups",
        "s3_region": "eu-west-1",
        "s3_access_key": "AKIAEXAMPLE",
        "s3_secret_key": SECRET,
    }
    data.update(overrides)
    return data


def assert_public(config: dict) -> None:
    assert list(config) == list(PUBLIC_FIELDS)
    assert SECRET not in json.dumps(config)


def test_create_and_get_a_local_config(store: StorageConfigStore) -> None:
    created = store.create({"name": "disk", "type": "local", "path": "/var/backups/qdrant"})
    assert_public(created)
    assert created["id"].startswith("st_") and len(created["id"]) == 15
    assert created == {
        "id": created["id"],
        "name": "disk",
        "type": "local",
        "path": "/var/backups/qdrant",
        "s3_endpoint": None,
        "s3_bucket": None,
        "s3_region": None,
        "s3_access_key": None,
        "is_default": False,
        "created_at": created["created_at"],
        "updated_at": created["created_at"],
    }
    assert created["created_at"].endswith("Z")
    assert store.get(created["id"]) == created
    assert store.count() == 1


def test_the_secret_only_comes_back_when_asked_for(
    store: StorageConfigStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    created = store.create(s3_data(is_default=True))
    assert_public(created)
    assert_public(store.get(created["id"]))
    for config in store.list():
        assert_public(config)
    assert_public(default_of(store) or {})
    updated = store.update(created["id"], {"name": "offsite-2", "s3_secret_key": SECRET})
    assert_public(updated)

    with_secret = store.get(created["id"], with_secret=True)
    assert with_secret["s3_secret_key"] == SECRET
    assert {k: v for k, v in with_secret.items() if k != "s3_secret_key"} == store.get(created["id"])
    assert (default_of(store, with_secret=True) or {})["s3_secret_key"] == SECRET
    # stored under its own field name, so the encryption helper can find it
    assert redis_client.hexists(f"{key_prefix}storage:{created['id']}", "s3_secret_key")


def test_a_local_config_has_no_secret(store: StorageConfigStore) -> None:
    created = store.create({"name": "disk", "type": "local", "path": "/srv"})
    assert store.get(created["id"], with_secret=True)["s3_secret_key"] is None


def test_list_is_ordered_by_creation(store: StorageConfigStore) -> None:
    ids = [store.create({"name": f"d{i}", "type": "local", "path": f"/d{i}"})["id"] for i in range(12)]
    listed = store.list()
    assert [c["name"] for c in listed] == [f"d{i}" for i in range(12)]
    assert [c["id"] for c in listed] == ids
    assert store.count() == 12


def test_update_is_partial_and_none_clears(store: StorageConfigStore) -> None:
    created = store.create(s3_data())
    updated = store.update(created["id"], {"s3_bucket": "backups-2"})
    assert updated["s3_bucket"] == "backups-2"
    assert {k: v for k, v in updated.items() if k not in ("s3_bucket", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("s3_bucket", "updated_at")
    }
    updated = store.update(created["id"], {"s3_region": None, "type": "s3"})  # same type is fine
    assert updated["s3_region"] is None
    assert store.get(created["id"], with_secret=True)["s3_secret_key"] == SECRET
    updated = store.update(created["id"], {"s3_secret_key": "new-secret"})
    assert store.get(created["id"], with_secret=True)["s3_secret_key"] == "new-secret"
    assert store.get(created["id"]) == updated


def test_type_cannot_change(store: StorageConfigStore) -> None:
    created = store.create({"name": "disk", "type": "local", "path": "/srv"})
    with pytest.raises(ValueError, match="cannot change"):
        store.update(created["id"], {"type": "s3", "name": "renamed"})
    assert store.get(created["id"]) == created  # nothing applied


@pytest.mark.parametrize(
    "data",
    [
        {"name": "x", "type": "ftp", "path": "/srv"},
        {"type": "local", "path": "/srv"},
        {"name": "x", "type": "local", "path": "/srv", "colour": "red"},
        {"name": "x", "type": "local", "path": 42},
        {"name": "x", "type": "local", "path": "/srv", "is_default": "yes"},
    ],
)
def test_create_refuses_malformed_data(
    store: StorageConfigStore, redis_client: redis.Redis, key_prefix: str, data: dict
) -> None:
    with pytest.raises(ValueError):
        store.create(data)
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []


def test_missing_configs_are_not_found(
    store: StorageConfigStore, redis_client: redis.Redis, key_prefix: str
) -> None:
    with pytest.raises(StorageConfigNotFound, match="st_000000000000"):
        store.get("st_000000000000")
    with pytest.raises(StorageConfigNotFound):
        store.update("st_000000000000", {"name": "x", "is_default": True})
    with pytest.raises(StorageConfigNotFound):
        store.delete("st_000000000000")
    assert default_of(store) is None
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []


def test_delete(store: StorageConfigStore) -> None:
    keep = store.create({"name": "keep", "type": "local", "path": "/a"})
    gone = store.create(s3_data(is_default=True))
    store.delete(gone["id"])
    with pytest.raises(StorageConfigNotFound):
        store.get(gone["id"])
    assert store.list() == [keep]
    assert store.count() == 1
    assert default_of(store) is None


def test_default_moves_and_is_only_cleared_by_its_owner(store: StorageConfigStore) -> None:
    a = store.create({"name": "a", "type": "local", "path": "/a", "is_default": True})
    assert a["is_default"]
    b = store.create({"name": "b", "type": "local", "path": "/b", "is_default": True})
    assert b["is_default"]
    assert not store.get(a["id"])["is_default"]
    assert (default_of(store) or {})["id"] == b["id"]

    # a is not the default any more: saying "a is not default" must not clear b's default
    assert not store.update(a["id"], {"is_default": False})["is_default"]
    assert (default_of(store) or {})["id"] == b["id"]

    assert not store.update(b["id"], {"is_default": False})["is_default"]
    assert default_of(store) is None
    assert [c["is_default"] for c in store.list()] == [False, False]

    assert store.update(a["id"], {"is_default": True})["is_default"]
    store.delete(b["id"])
    assert (default_of(store) or {})["id"] == a["id"]


def test_racing_threads_leave_exactly_one_default(store: StorageConfigStore) -> None:
    n = 16
    ids = [store.create({"name": f"c{i}", "type": "local", "path": f"/c{i}"})["id"] for i in range(n)]
    for _ in range(5):
        barrier = threading.Barrier(n)
        errors: list[BaseException] = []

        def claim(
            storage_id: str, i: int, barrier: threading.Barrier = barrier, errors: list = errors
        ) -> None:
            barrier.wait()
            try:
                store.update(storage_id, {"is_default": True})
                if i % 2:  # half of them also change their mind, which must only ever clear their own claim
                    store.update(storage_id, {"is_default": False})
                    store.update(storage_id, {"is_default": True})
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=claim, args=(sid, i)) for i, sid in enumerate(ids)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        defaults = [c["id"] for c in store.list() if c["is_default"]]
        assert len(defaults) == 1
        assert (default_of(store) or {})["id"] == defaults[0]
