"""PUT /collections/{name}/snapshots/recover cannot be used to make Qdrant fetch arbitrary URLs or files.

Qdrant fetches ``location`` itself, from inside the cluster network. The API allows only http, https and
file, http(s) only to allowed hosts (Qdrant's own address and the S3 endpoints of registered backends, or
QBM_RECOVER_ALLOWED_HOSTS), and refuses with 422 naming ``location`` *before* Qdrant is asked anything --
which the tests check on the Qdrant double's request log, not only on the status code.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from shared.adapters.storage import S3Storage
from shared.runtime.config import ConfigError, load_config
from tests.api.helpers import API, error_of, result_of
from tests.security.conftest import FsGuard

RECOVER = f"{API}/collections/restored/snapshots/recover"


def _refused_without_asking_qdrant(client, qdrant, location: str) -> str:
    seen = len(qdrant.requests_seen)
    resp = client.put(RECOVER, json={"location": location})
    assert resp.status_code == 422, (location, resp.status_code, resp.get_json())
    message = error_of(resp)
    assert message.startswith("location:"), message
    assert qdrant.requests_seen[seen:] == [], f"Qdrant was asked to act on {location!r}"
    return message


def _snapshot_url(client, qdrant) -> str:
    """A URL of a real snapshot served by the Qdrant double itself (what peer recovery uses)."""
    snapshot = result_of(client.post(f"{API}/collections/alpha/snapshots"))
    return f"{qdrant.url}/collections/alpha/snapshots/{snapshot['name']}"


def _hostport(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _hostile_locations(qdrant_url: str) -> list[str]:
    qd = _hostport(qdrant_url)
    host, port = qd.split(":")
    return [
        # other hosts and ports: cloud metadata, neighbours, Redis on Qdrant's own host
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/x.snapshot",
        "http://metadata.google.internal/computeMetadata/v1/x.snapshot",
        "https://evil.example/x.snapshot",
        f"http://{host}:6379/x.snapshot",
        f"http://{host}:{int(port) + 1}/x.snapshot",
        f"http://{host}/x.snapshot",
        f"https://{host}/x.snapshot",
        f"http://localhost:{port}/x.snapshot",
        # spellings of the same or another host that parsers disagree about
        f"http://evil.example\\@{qd}/x.snapshot",
        f"http://{qd}\\@evil.example/x.snapshot",
        f"http://{qd}@evil.example/x.snapshot",
        f"http://user:pass@{qd}/x.snapshot",
        f"http://{qd}%2f@evil.example/x.snapshot",
        f"http://{qd}\t.evil.example/x.snapshot",
        f"http://{qd}\n/x.snapshot",
        f" http://{qd}/x.snapshot",
        f"http://[::ffff:{host}]:{port}/x.snapshot",
        f"http://2130706433:{port}/x.snapshot",
        f"http://0x7f.0.0.1:{port}/x.snapshot",
        f"http://{host}.:{port}/x.snapshot",
        f"http://%31{host[1:]}:{port}/x.snapshot",
        f"http://{host}:{port}0/x.snapshot",
        f"http://{host}:99999/x.snapshot",
        f"http:/{qd}/x.snapshot",
        f"http:{qd}/x.snapshot",
        f"//{qd}/x.snapshot",
        # other schemes
        f"ftp://{qd}/x.snapshot",
        f"gopher://{host}:6379/_FLUSHALL",
        f"dict://{host}:6379/info",
        "data:application/octet-stream;base64,AAAA",
        f"jar:http://{qd}/x.snapshot!/",
        "file://evil.example/etc/passwd",
        "file://169.254.169.254/x.snapshot",
        "file:/etc/passwd",
        "file:etc/passwd",
        "/etc/passwd",
    ]


def test_hostile_locations_are_refused_before_qdrant_is_asked(client, qdrant, fs_guard: FsGuard):
    fs_guard.snapshot()
    for location in _hostile_locations(qdrant.url):
        _refused_without_asking_qdrant(client, qdrant, location)
    assert not qdrant.collection_exists("restored")
    fs_guard.assert_untouched()


def test_refusal_names_the_allowed_hosts(client, qdrant):
    message = _refused_without_asking_qdrant(client, qdrant, "https://evil.example/x.snapshot")
    assert "evil.example:443" in message
    assert _hostport(qdrant.url) in message and "QBM_RECOVER_ALLOWED_HOSTS" in message


def test_qdrants_own_address_is_allowed_by_default(client, qdrant):
    """Peer recovery: Qdrant pulls a snapshot from a Qdrant node (here: from itself)."""
    url = _snapshot_url(client, qdrant)
    resp = client.put(RECOVER, json={"location": url})
    assert resp.status_code == 200, resp.get_json()
    assert qdrant.points_count("restored") == 20
    upper = url.replace("http://", "HTTP://", 1)
    assert client.put(f"{API}/collections/again/snapshots/recover", json={"location": upper}).status_code == 200


def test_s3_endpoints_of_registered_backends_are_allowed_by_default(client, qdrant, s3_server, s3_bucket):
    """A presigned URL into a registered S3 backend is what a restore hands Qdrant; it is refused until a
    backend with that endpoint exists."""
    url = _snapshot_url(client, qdrant)
    data = client.get(urlsplit(url).path.replace("/collections", f"{API}/collections") + "/download").get_data()
    storage = S3Storage(s3_server.endpoint, s3_bucket, s3_server.region, s3_server.access_key,
                        s3_server.secret_key)
    storage.write_bytes("alpha/b1/collection.snapshot", data)
    presigned = storage.presigned_get_url("alpha/b1/collection.snapshot", timedelta(minutes=5))

    _refused_without_asking_qdrant(client, qdrant, presigned)
    result_of(client.post(f"{API}/storage", json={
        "name": "s3", "type": "s3", "s3_endpoint": s3_server.endpoint, "s3_bucket": s3_bucket,
        "s3_region": s3_server.region, "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key}))
    resp = client.put(RECOVER, json={"location": presigned})
    assert resp.status_code == 200, resp.get_json()
    assert qdrant.points_count("restored") == 20


def test_configured_allowlist_replaces_the_default(client, make_client, qdrant):
    host, port = _hostport(qdrant.url).split(":")
    only_other = make_client(recover_allowed_hosts=("backups.example.org:8443",))
    only_other_url = _snapshot_url(only_other, qdrant)
    message = _refused_without_asking_qdrant(only_other, qdrant, only_other_url)
    assert "backups.example.org:8443" in message

    any_port = make_client(recover_allowed_hosts=(host,))  # a bare host: every port of it
    assert any_port.put(RECOVER, json={"location": only_other_url}).status_code == 200
    _refused_without_asking_qdrant(any_port, qdrant, only_other_url.replace(host, "localhost", 1))

    exact = make_client(recover_allowed_hosts=(f"{host}:{int(port) + 1}",))
    _refused_without_asking_qdrant(exact, qdrant, only_other_url)


def test_allowlist_variable_is_parsed_and_checked():
    config = load_config({"QBM_RECOVER_ALLOWED_HOSTS": " Qdrant-2.internal:6333, minio ,[::1]:9000,10.0.0.7"})
    assert config.recover_allowed_hosts == ("qdrant-2.internal:6333", "minio", "[::1]:9000", "10.0.0.7")
    assert load_config({}).recover_allowed_hosts is None
    for bad in ("http://minio:9000", "minio:port", "user@minio", "minio/x", "minio:70000"):
        with pytest.raises(ConfigError, match="QBM_RECOVER_ALLOWED_HOSTS"):
            load_config({"QBM_RECOVER_ALLOWED_HOSTS": bad})


def test_file_location_outside_qdrants_snapshots_is_a_422_with_qdrants_reason(client, qdrant,
                                                                              fs_guard: FsGuard):
    """Only Qdrant knows its snapshots path, so file:// is forwarded; its 403 becomes a 422 naming
    location (not a 502 blaming the server), and the file is not read into a collection."""
    fs_guard.snapshot()
    for target in (fs_guard.outside / "canary.snapshot", qdrant.snapshots_path.parent / "canary.snapshot"):
        for location in (target.as_uri(), f"file://localhost{target}"):
            resp = client.put(RECOVER, json={"location": location})
            assert resp.status_code == 422, resp.get_json()
            message = error_of(resp)
            assert message.startswith("location:") and "outside of the snapshots directory" in message, message
    assert not qdrant.collection_exists("restored")
    fs_guard.assert_untouched()


def test_file_location_inside_qdrants_snapshots_still_works(client, qdrant):
    snapshot = result_of(client.post(f"{API}/collections/alpha/snapshots"))
    [path] = [p for p in qdrant.snapshot_files("alpha") if p.name == snapshot["name"]]
    resp = client.put(RECOVER, json={"location": path.resolve().as_uri()})
    assert resp.status_code == 200, resp.get_json()
    assert qdrant.points_count("restored") == 20
