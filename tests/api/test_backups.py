"""The backup catalog and pruning through the API: read from manifests in storage, 404/409/422, auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.storage import LocalStorage
from shared.domain.manifest import manifest_key
from tests.api.helpers import API, closed_port_url, error_of, result_of
from tests.backup_factory import put_backup

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def client(make_client):
    """The catalog never talks to Qdrant."""
    return make_client()


@pytest.fixture
def disk(local_storage):
    cfg = local_storage("disk", is_default=True)
    return cfg, LocalStorage(cfg["path"])


def _ids(page):
    return [b["backup_id"] for b in page["items"]]


def test_list_is_newest_first_paginated_and_filtered(client, disk):
    cfg, storage = disk
    docs = [put_backup(storage, "docs", NOW - timedelta(hours=h)) for h in (5, 3, 1)]
    other = put_backup(storage, "other", NOW - timedelta(hours=2))
    storage.write_bytes("docs/20200101T000000Z-unfinish/collection.snapshot", b"no manifest yet")

    page = result_of(client.get(f"{API}/backups"))
    assert _ids(page) == [docs[2].backup_id, other.backup_id, docs[1].backup_id, docs[0].backup_id]
    assert (page["total"], page["page"], page["limit"]) == (4, 1, 20)
    first = page["items"][0]
    assert first["storage_id"] == cfg["id"] and first["collection"] == "docs"
    assert first["sha256"] == docs[2].sha256 and first["size"] == 64 and first["shard_id"] is None

    page2 = result_of(client.get(f"{API}/backups?limit=3&page=2"))
    assert _ids(page2) == [docs[0].backup_id] and page2["total"] == 4
    only_docs = result_of(client.get(f"{API}/backups?collection=docs&storage_id={cfg['id']}"))
    assert _ids(only_docs) == [m.backup_id for m in reversed(docs)] and only_docs["total"] == 3
    assert result_of(client.get(f"{API}/backups?collection=none"))["items"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("storage_id=st_000000000000", "storage_id"), ("storage_id=default", "storage_id"),
     ("collection=a%20b", "collection"), ("collection=..", "collection"), ("page=0", "page"),
     ("limit=101", "limit")],
)
def test_list_with_bad_arguments_is_422(client, disk, query, field):
    resp = client.get(f"{API}/backups?{query}")
    assert resp.status_code == 422
    assert error_of(resp).startswith(f"{field}:")


def test_list_without_any_storage_is_422(client):
    resp = client.get(f"{API}/backups")
    assert resp.status_code == 422
    assert error_of(resp).startswith("storage_id:")


def test_get_one_by_id_with_or_without_collection(client, disk):
    cfg, storage = disk
    made = put_backup(storage, "docs", NOW, shard_id=3)
    for suffix in ("", "?collection=docs"):
        got = result_of(client.get(f"{API}/backups/{cfg['id']}/{made.backup_id}{suffix}"))
        assert got["backup_id"] == made.backup_id and got["shard_id"] == 3 and got["type"] == "shard_backup"
    assert client.get(f"{API}/backups/{cfg['id']}/{made.backup_id}?collection=other").status_code == 404
    for path in (f"{cfg['id']}/20260101T000000Z-deadbeef", f"st_000000000000/{made.backup_id}",
                 f"{cfg['id']}/..x", "nope/x"):
        resp = client.get(f"{API}/backups/{path}")
        assert resp.status_code == 404, path
        assert "not found" in error_of(resp)


def test_delete_removes_manifest_and_data(client, disk):
    cfg, storage = disk
    keep = put_backup(storage, "docs", NOW - timedelta(days=1))
    gone = put_backup(storage, "docs", NOW)
    resp = client.delete(f"{API}/backups/{cfg['id']}/{gone.backup_id}")
    assert resp.status_code == 200 and result_of(resp)["backup_id"] == gone.backup_id
    assert not storage.exists(manifest_key("docs", gone.backup_id)) and not storage.exists(gone.key)
    assert storage.exists(keep.key)
    assert client.delete(f"{API}/backups/{cfg['id']}/{gone.backup_id}").status_code == 404
    assert _ids(result_of(client.get(f"{API}/backups"))) == [keep.backup_id]


def test_delete_of_a_backup_a_restore_is_about_to_read_is_409(client, disk):
    cfg, storage = disk
    made = put_backup(storage, "docs", NOW)
    job = client.post(f"{API}/jobs", json={"type": "restore", "collection_name": "docs",
                                           "snapshot_name": made.backup_id})
    assert job.status_code == 201
    resp = client.delete(f"{API}/backups/{cfg['id']}/{made.backup_id}")
    assert resp.status_code == 409 and "restore" in error_of(resp)
    assert storage.exists(made.key)
    # Once the restore is no longer pending, the backup can go.
    assert client.post(f"{API}/jobs/{result_of(job)['id']}/cancel").status_code == 200
    assert client.delete(f"{API}/backups/{cfg['id']}/{made.backup_id}").status_code == 200


def test_prune_dry_run_then_for_real(client, disk):
    cfg, storage = disk
    made = [put_backup(storage, "docs", NOW - timedelta(days=d)) for d in (4, 3, 2, 1)]
    untouched = put_backup(storage, "other", NOW - timedelta(days=9))
    body = {"collection": "docs", "keep_last": 2, "dry_run": True}
    dry = result_of(client.post(f"{API}/backups/prune", json=body))
    assert dry["dry_run"] is True
    assert [b["backup_id"] for b in dry["deleted"]] == [made[1].backup_id, made[0].backup_id]
    assert dry["kept"] == [made[3].backup_id, made[2].backup_id]
    assert all(storage.exists(m.key) for m in made)

    done = result_of(client.post(f"{API}/backups/prune", json={**body, "dry_run": False,
                                                                "storage_id": cfg["id"]}))
    assert done["deleted"] == dry["deleted"] and done["dry_run"] is False
    assert _ids(result_of(client.get(f"{API}/backups?collection=docs"))) == [made[3].backup_id, made[2].backup_id]
    assert not storage.exists(made[0].key) and storage.exists(untouched.key)


def test_prune_by_age_never_deletes_the_newest(client, disk):
    _, storage = disk
    old = [put_backup(storage, "docs", NOW - timedelta(days=d)) for d in (30, 20)]
    result = result_of(client.post(f"{API}/backups/prune", json={"collection": "docs", "max_age_days": 7}))
    assert [b["backup_id"] for b in result["deleted"]] == [old[0].backup_id]
    assert result["kept"] == [old[1].backup_id]


def test_prune_counts_each_shard_on_its_own(client, disk):
    _, storage = disk
    for shard in (0, 1):
        for days in (3, 2, 1):
            put_backup(storage, "split", NOW - timedelta(days=days, minutes=shard), shard_id=shard)
    result = result_of(client.post(f"{API}/backups/prune", json={"collection": "split", "keep_last": 1}))
    assert len(result["deleted"]) == 4 and len(result["kept"]) == 2
    remaining = result_of(client.get(f"{API}/backups?collection=split"))["items"]
    assert sorted(b["shard_id"] for b in remaining) == [0, 1]


def test_pinned_backup_is_shown_kept_by_prune_and_refused_by_delete_until_unpinned(client, disk):
    cfg, storage = disk
    made = [put_backup(storage, "docs", NOW - timedelta(days=d)) for d in (4, 3, 2, 1)]
    pinned = made[0]
    path = f"{API}/backups/{cfg['id']}/{pinned.backup_id}/pin"
    answer = result_of(client.put(path))
    assert answer["backup_id"] == pinned.backup_id and answer["pinned"] is True
    assert result_of(client.put(f"{path}?collection=docs"))["pinned"] is True  # pinning twice changes nothing
    assert storage.exists(f"docs/{pinned.backup_id}/pinned.json")  # the pin lives with the backup
    listed = result_of(client.get(f"{API}/backups?collection=docs"))["items"]
    assert [b["pinned"] for b in listed] == [False, False, False, True]
    assert result_of(client.get(f"{API}/backups/{cfg['id']}/{pinned.backup_id}"))["pinned"] is True

    # keep_last: 1 deletes every unpinned backup but the newest; the pinned one stays and does not count.
    result = result_of(client.post(f"{API}/backups/prune", json={"collection": "docs", "keep_last": 1}))
    assert [b["backup_id"] for b in result["deleted"]] == [made[2].backup_id, made[1].backup_id]
    assert result["kept"] == [made[3].backup_id, pinned.backup_id] and result["pinned"] == [pinned.backup_id]
    assert storage.exists(pinned.key)

    refused = client.delete(f"{API}/backups/{cfg['id']}/{pinned.backup_id}")
    assert refused.status_code == 409 and "is pinned; unpin it first" in error_of(refused)
    assert storage.exists(pinned.key) and storage.exists(manifest_key("docs", pinned.backup_id))

    unpinned = client.delete(path)
    assert unpinned.status_code == 200 and result_of(unpinned)["pinned"] is False
    assert client.delete(path).status_code == 200  # unpinning twice changes nothing
    assert not storage.exists(f"docs/{pinned.backup_id}/pinned.json")
    assert client.delete(f"{API}/backups/{cfg['id']}/{pinned.backup_id}").status_code == 200
    assert not storage.exists(pinned.key)


def test_pin_of_an_unknown_backup_or_storage_is_404(client, disk):
    cfg, _ = disk
    for path in (f"{cfg['id']}/20260101T000000Z-deadbeef", "st_000000000000/20260101T000000Z-deadbeef"):
        for method in (client.put, client.delete):
            resp = method(f"{API}/backups/{path}/pin")
            assert resp.status_code == 404 and "not found" in error_of(resp)


def test_prune_of_one_schedule_touches_only_that_schedules_backups(client, disk):
    cfg, storage = disk
    by_hand = put_backup(storage, "docs", NOW - timedelta(days=9))
    other = put_backup(storage, "docs", NOW - timedelta(days=8), schedule_id="sc_other000000")
    mine = [put_backup(storage, "docs", NOW - timedelta(days=d), schedule_id="sc_mine00000000") for d in (3, 2, 1)]
    listed = {b["backup_id"]: b["schedule_id"] for b in result_of(client.get(f"{API}/backups"))["items"]}
    assert listed[by_hand.backup_id] is None and listed[other.backup_id] == "sc_other000000"

    body = {"collection": "docs", "keep_last": 1, "schedule_id": "sc_mine00000000"}
    result = result_of(client.post(f"{API}/backups/prune", json=body))
    assert [b["backup_id"] for b in result["deleted"]] == [mine[1].backup_id, mine[0].backup_id]
    assert result["kept"] == [mine[2].backup_id]
    assert _ids(result_of(client.get(f"{API}/backups?collection=docs"))) == [
        mine[2].backup_id, other.backup_id, by_hand.backup_id]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"collection": "docs"}, "keep_last"), ({"collection": "docs", "keep_last": 0}, "keep_last"),
     ({"collection": "docs", "max_age_days": -1}, "max_age_days"), ({"keep_last": 2}, "collection"),
     ({"collection": "docs", "keep_last": 1, "storage_id": "st_000000000000"}, "storage_id"),
     ({"collection": "..", "keep_last": 1}, "collection")],
)
def test_prune_with_bad_arguments_is_422(client, disk, body, field):
    resp = client.post(f"{API}/backups/prune", json=body)
    assert resp.status_code == 422
    assert error_of(resp).startswith(f"{field}:")


def test_catalog_needs_a_key_when_keys_are_configured(make_client):
    secured = make_client(api_keys=("k-123456",))
    assert secured.get(f"{API}/backups").status_code == 401
    assert secured.post(f"{API}/backups/prune", json={"collection": "docs", "keep_last": 1}).status_code == 401
    resp = secured.get(f"{API}/backups", headers={"Authorization": "Bearer k-123456"})
    assert resp.status_code == 422  # authenticated; there is simply no storage backend yet


def test_unreachable_storage_is_503(client):
    body = {"name": "s3", "type": "s3", "s3_endpoint": closed_port_url(), "s3_bucket": "qbm-nowhere", "s3_region": "r",
            "s3_access_key": "ak", "s3_secret_key": "sk-secret-1", "is_default": True}
    cfg = result_of(client.post(f"{API}/storage", json=body))
    resp = client.get(f"{API}/backups")
    assert resp.status_code == 503, resp.get_json()
    assert cfg["id"] in error_of(resp) and "sk-secret-1" not in error_of(resp)


def test_a_storage_config_that_cannot_be_used_is_refused_not_a_server_error(client, disk, make_client, tmp_path):
    """The operator narrowed QBM_STORAGE_ROOTS after the backend was registered: its path is no longer allowed."""
    cfg, storage = disk
    made = put_backup(storage, "docs", NOW)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    narrowed = make_client(storage_roots=(elsewhere,))
    one = narrowed.get(f"{API}/backups/{cfg['id']}/{made.backup_id}")
    assert one.status_code == 409 and "cannot be used" in error_of(one)
    listed = narrowed.get(f"{API}/backups?storage_id={cfg['id']}")
    assert listed.status_code == 422 and error_of(listed).startswith("storage_id:")
