"""The dashboard page and the /docs page are served by the API with everything they load (no CDN), and the
page itself carries no data: with API keys set it is served, but every /api/v1 call it makes needs a key."""

from __future__ import annotations

import re

import pytest

from tests.api.helpers import API

ASSET = re.compile(r'(?:src|href)="([^"#]+)"')


def assets(html: str) -> list[str]:
    return [url for url in ASSET.findall(html) if not url.startswith("data:")]


@pytest.mark.parametrize("page", ["/", "/docs"])
def test_pages_load_everything_from_this_server(make_client, page):
    client = make_client(api_keys=("k-123",))
    resp = client.get(page)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    urls = assets(html)
    assert urls, html[:500]
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        asset.close()
    assert "cdn." not in html and "https://" not in html.replace("https://github.com", "")


def test_docs_ask_swagger_ui_not_to_call_the_outside_validator(offline_client):
    html = offline_client.get("/docs").get_data(as_text=True)
    assert "/dashboard/static/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js" in html
    assert '"validatorUrl": null' in html


def test_the_page_is_served_without_a_key_but_holds_no_data(make_client, qdrant):
    client = make_client(api_keys=("k-123",), qdrant_url=qdrant.url)
    qdrant.create_collection("hidden-name")
    page = client.get("/")
    assert page.status_code == 200
    assert "hidden-name" not in page.get_data(as_text=True)
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get(f"{API}/collections").status_code == 401
    assert client.get(f"{API}/collections", headers={"Authorization": "Bearer k-123"}).status_code == 200

