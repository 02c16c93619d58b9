"""S3 secret keys at rest: Redis holds only Fernet tokens made with QBM_SECRET_KEY.

Whoever reads Redis (a replica, an RDB file, a backup of it) must not learn the S3 credentials. Without a
key the service refuses to store an S3 secret and says why; local backends keep working. Keys rotate
through a comma-separated list and ``qbm rotate-secrets``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from shared.adapters.secret_box import ENCRYPTED_PREFIX, SecretBox, SecretKeyMissing, SecretUndecryptable
from shared.adapters.storage import S3Storage
from shared.records.storage_configs import StorageConfigStore
from shared.runtime.config import ConfigError, load_config
from tests.api.helpers import API, error_of, result_of
from tests.backup_factory import put_backup
from tests.security.redis_dump import occurrences

REPO = Path(__file__).resolve().parents[2]


def _secret() -> str:
    return f"S3SECRET-{uuid.uuid4().hex}-at-rest"


def _s3_body(s3_server, bucket: str, key: tuple[str, str], name: str = "s3") -> dict:
    """A backend with an access key and its secret (moto's IAM made them: S3 checks the signature)."""
    return {"name": name, "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": bucket,
            "s3_region": s3_server.region, "s3_access_key": key[0], "s3_secret_key": key[1]}


def s3_server_storage(s3_server, bucket: str) -> S3Storage:
    return S3Storage(s3_server.endpoint, bucket, s3_server.region, s3_server.access_key, s3_server.secret_key)


def _stored(redis_client: redis.Redis, prefix: str, storage_id: str) -> str:
    return redis_client.hget(f"{prefix}storage:{storage_id}", "s3_secret_key").decode()


def test_the_s3_secret_is_stored_encrypted(client, s3_server, s3_bucket, redis_client, key_prefix, secret_key):
    first = s3_server.new_key()
    secret = first[1]
    created = result_of(client.post(f"{API}/storage", json=_s3_body(s3_server, s3_bucket, first)))
    assert "s3_secret_key" not in created

    stored = _stored(redis_client, key_prefix, created["id"])
    assert stored.startswith(ENCRYPTED_PREFIX)
    assert Fernet(secret_key.encode()).decrypt(stored.removeprefix(ENCRYPTED_PREFIX).encode()).decode() == secret
    assert occurrences(redis_client, key_prefix, secret) == []

    # A new key replaces it (a key rotation), its secret encrypted too; the same secret encrypts differently
    # each time (fresh IV).
    rotated = s3_server.new_key()
    second = rotated[1]
    result_of(client.put(f"{API}/storage/{created['id']}",
                         json={"s3_access_key": rotated[0], "s3_secret_key": second}))
    assert occurrences(redis_client, key_prefix, second) == []
    again = result_of(client.post(f"{API}/storage", json=_s3_body(s3_server, s3_bucket, rotated, "twin")))
    assert _stored(redis_client, key_prefix, created["id"]) != _stored(redis_client, key_prefix, again["id"])
    # And the backend still works with it: the API decrypts it to build the client, and S3 checks the
    # signature it makes with it (a backup is there to be listed, so S3 was asked).
    made = put_backup(s3_server_storage(s3_server, s3_bucket), "docs", datetime.now(UTC))
    listing = client.get(f"{API}/backups", query_string={"storage_id": created["id"]})
    assert listing.status_code == 200, listing.get_json()
    assert [b["backup_id"] for b in result_of(listing)["items"]] == [made.backup_id]


def test_without_a_secret_key_s3_is_refused_with_the_reason_and_local_works(
    make_client, s3_server, s3_bucket, redis_client, key_prefix, storage_root
):
    keyless = make_client(secret_keys=())
    key = s3_server.new_key()
    secret = key[1]
    resp = keyless.post(f"{API}/storage", json=_s3_body(s3_server, s3_bucket, key))
    assert resp.status_code == 503
    assert "QBM_SECRET_KEY" in error_of(resp) and "not set" in error_of(resp)
    assert result_of(keyless.get(f"{API}/storage")) == []
    assert occurrences(redis_client, key_prefix, secret) == []
    assert list(redis_client.scan_iter(match=f"{key_prefix}storage:*")) == []

    # Testing a backend stores nothing, so it needs no key.
    tested = result_of(keyless.post(f"{API}/storage/test", json=_s3_body(s3_server, s3_bucket, key)))
    assert tested["success"] is True, tested

    local = keyless.post(f"{API}/storage", json={"name": "disk", "type": "local", "path": str(storage_root / "d")})
    assert local.status_code == 201, local.get_json()
    assert result_of(keyless.put(f"{API}/storage/{result_of(local)['id']}", json={"name": "disk-2"}))["name"] == \
        "disk-2"


def test_a_process_without_the_right_key_cannot_read_or_change_the_secret(
    client, make_client, s3_server, s3_bucket, redis_client, key_prefix
):
    key = s3_server.new_key()
    secret = key[1]
    created = result_of(client.post(f"{API}/storage", json=_s3_body(s3_server, s3_bucket, key)))
    before = _stored(redis_client, key_prefix, created["id"])

    for other in (make_client(secret_keys=()), make_client(secret_keys=(Fernet.generate_key().decode(),))):
        assert result_of(other.get(f"{API}/storage/{created['id']}")) == created  # public fields need no key
        resp = other.put(f"{API}/storage/{created['id']}", json={"s3_region": "eu-west-1"})
        assert resp.status_code == 503
        assert "QBM_SECRET_KEY" in error_of(resp)
        assert secret not in resp.get_data(as_text=True)
        listing = other.get(f"{API}/backups", query_string={"storage_id": created["id"]})
        assert listing.status_code == 503 and "QBM_SECRET_KEY" in error_of(listing)
    assert _stored(redis_client, key_prefix, created["id"]) == before


def _rotate(redis_url: str, prefix: str, keys: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBM_")}
    env.update({"QBM_REDIS_URL": redis_url, "QBM_KEY_PREFIX": prefix})
    if keys is not None:
        env["QBM_SECRET_KEY"] = keys
    return subprocess.run([sys.executable, "-m", "qbm.cli", "rotate-secrets"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_key_rotation_with_qbm_rotate_secrets(redis_client, redis_url, key_prefix, storage_root):
    """New key first, old key after it; `qbm rotate-secrets` re-encrypts everything (also secrets an older
    version stored in the clear); afterwards the old key can go."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = StorageConfigStore(redis_client, key_prefix, (old,))
    secrets = {_secret(): None, _secret(): None}
    for secret in secrets:
        secrets[secret] = before.create({"name": "s3", "type": "s3", "s3_endpoint": "http://minio:9000",
                                         "s3_bucket": "b", "s3_secret_key": secret})["id"]
    legacy = _secret()  # what QBM stored before encryption at rest existed
    legacy_id = before.create({"name": "old", "type": "local", "path": str(storage_root)})["id"]
    redis_client.hset(f"{key_prefix}storage:{legacy_id}", "s3_secret_key", legacy)
    secrets[legacy] = legacy_id

    both = StorageConfigStore(redis_client, key_prefix, (new, old))
    for secret, storage_id in secrets.items():  # during the rotation every process reads everything
        assert both.get(storage_id, with_secret=True)["s3_secret_key"] == secret

    done = _rotate(redis_url, key_prefix, f"{new},{old}")
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 3 stored secret(s)" in done.stderr, done.stderr
    assert legacy not in done.stderr + done.stdout

    after = StorageConfigStore(redis_client, key_prefix, (new,))
    for secret, storage_id in secrets.items():
        assert after.get(storage_id, with_secret=True)["s3_secret_key"] == secret
        assert occurrences(redis_client, key_prefix, secret) == []
        with pytest.raises(SecretUndecryptable, match="QBM_SECRET_KEY"):
            before.get(storage_id, with_secret=True)

    again = _rotate(redis_url, key_prefix, new)
    assert again.returncode == 0 and "re-encrypted 0 stored secret(s)" in again.stderr
    assert "3 already were" in again.stderr

    missing = _rotate(redis_url, key_prefix, None)
    assert missing.returncode == 2 and "QBM_SECRET_KEY is not set" in missing.stderr
    wrong = _rotate(redis_url, key_prefix, Fernet.generate_key().decode())
    assert wrong.returncode == 2 and "cannot be decrypted" in wrong.stderr
    bad = _rotate(redis_url, key_prefix, "not-a-key")
    assert bad.returncode == 2 and "QBM_SECRET_KEY" in bad.stderr and "not-a-key" not in bad.stderr


def test_secret_key_variable_is_validated_and_never_shown():
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    config = load_config({"QBM_SECRET_KEY": f" {first} , {second} "})
    assert config.secret_keys == (first, second)
    assert first not in repr(config) and second not in repr(config)
    assert first in config.secrets and second in config.secrets  # scrubbed from log lines
    assert load_config({}).secret_keys == ()
    for bad in ("short", first[:-2], first + "AA", "x" * 44):
        with pytest.raises(ConfigError, match="QBM_SECRET_KEY") as caught:
            load_config({"QBM_SECRET_KEY": f"{first},{bad}"})
        assert bad not in str(caught.value) and "key 2 of 2" in str(caught.value)


def test_secret_box_refuses_rather_than_storing_in_the_clear():
    with pytest.raises(SecretKeyMissing, match="QBM_SECRET_KEY"):
        SecretBox(()).encrypt("anything")
    box = SecretBox((Fernet.generate_key().decode(),))
    token = box.encrypt("s3cr3t-value")
    assert "s3cr3t-value" not in token and box.decrypt(token) == "s3cr3t-value"
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SecretUndecryptable):
        box.decrypt(tampered)
    with pytest.raises(SecretKeyMissing, match="stored encrypted"):
        SecretBox(()).decrypt(token)
    assert "s3cr3t" not in repr(box)
