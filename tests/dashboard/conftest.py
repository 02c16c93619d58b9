"""Fixtures for the dashboard tests: a real ``qbm api`` (gunicorn) and ``qbm worker`` over real Redis and the
Qdrant double, driven from Debian's headless Chromium through Playwright.

Every request the browser makes goes through a route that lets only 127.0.0.1 through and records anything else:
the test fails if the page tried to reach another host (a CDN, a font service, a validator).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from shared.runtime.config import Config
from tests.engine.conftest import QbmProcess, WorkerProcess, worker_env_for
from tests.waiting import wait_until

CHROMIUM = os.environ.get("QBM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu",
                 "--no-first-run"]
#: When set, the tests that make the README's screenshots also write them there (e.g. ``docs``).
README_SHOTS = os.environ.get("QBM_DASHBOARD_SCREENSHOT_DIR")


class ApiProcess(QbmProcess):
    """``qbm api``: gunicorn with one worker, as users run it."""

    args = ("api", "--workers", "1", "--threads", "8")

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        super().__init__(env, log_path)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self) -> ApiProcess:
        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"qbm api exited:\n{self.log()[-3000:]}"
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:  # not listening yet, or still booting
                return False

        wait_until(up, timeout=30, what="qbm api answering /healthz", details=self.log)
        return self



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dash_config(redis_url: str, key_prefix: str, qdrant: Any, tmp_path: Path, secret_key: str) -> Config:
    """QBM's config: its data dir (where ``qbm api`` registers the default local storage at first start) is the
    one storage root."""
    data = tmp_path / "data"
    data.mkdir()
    return Config(redis_url=redis_url, redis_url_explicit=True, qdrant_url=qdrant.url, data_dir=data,
                  storage_roots=(data,), key_prefix=key_prefix, secret_keys=(secret_key,))


@pytest.fixture
def start_api(dash_config: Config, tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(*, api_keys: str = "") -> ApiProcess:
        port = _free_port()
        env = worker_env_for(dash_config)
        env.update({"QBM_API_HOST": "127.0.0.1", "QBM_API_PORT": str(port), "QBM_API_KEYS": api_keys})
        api = ApiProcess(env, tmp_path / "api.log", port).start()
        started.append(api)
        return api.wait_ready()

    yield start
    for api in started:
        api.stop()


@pytest.fixture
def api(start_api: Callable[..., ApiProcess]) -> ApiProcess:
    """``qbm api`` without API keys."""
    return start_api()


@pytest.fixture
def worker(dash_config: Config, tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(worker_env_for(dash_config), tmp_path / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the dashboard tests need Chromium at {CHROMIUM} (apt-get install chromium, or set "
                    "QBM_TEST_CHROMIUM); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Page:
    """A Playwright page on QBM's dashboard, recording every request it makes and every script error."""

    def __init__(self, page: Any, base_url: str, shots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.shots = shots
        self.requested: list[str] = []
        self.outside: list[str] = []
        self.script_errors: list[str] = []

    def open(self, fragment: str = "") -> Any:
        self.page.goto(self.base_url + "/" + fragment)
        return self.page

    def screenshot(self, name: str, *, readme_name: str | None = None) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if readme_name and README_SHOTS:
            target = Path(README_SHOTS)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / readme_name)
        return path


def _api_refusal(message: Any) -> bool:
    return ("/api/v1/" in (message.location.get("url") or "")
            and "the server responded with a status of 4" in message.text)


@pytest.fixture
def open_dashboard(browser: Any, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """Open a fresh browser context (its own storage, the Asia/Kolkata time zone so local times differ from UTC,
    English) on an API's dashboard."""
    contexts: list[Any] = []
    pages: list[Page] = []

    def open_(api: ApiProcess, *, viewport: dict[str, int] | None = None) -> Page:
        context = browser.new_context(timezone_id="Asia/Kolkata", locale="en-GB",
                                      viewport=viewport or {"width": 1280, "height": 900})
        contexts.append(context)
        page = Page(context.new_page(), api.url, tmp_path)

        def guard(route: Any) -> None:
            url = route.request.url
            page.requested.append(url)
            if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
                route.continue_()
            else:
                page.outside.append(url)
                route.abort()

        context.route("**/*", guard)
        page.page.on("pageerror", lambda exc: page.script_errors.append(str(exc)))
        # Console errors too (a Content-Security-Policy violation, a missing asset), except the API's 4xx answers
        # the tests provoke on purpose (refusals, 401 before a key), which the browser logs as failed resources.
        page.page.on("console", lambda msg: page.script_errors.append(f"{msg.text} ({msg.location.get('url')})")
                     if msg.type == "error" and not _api_refusal(msg) else None)
        page.page.set_default_timeout(30_000)
        pages.append(page)
        return page

    yield open_
    for context in contexts:
        context.close()
    for page in pages:
        assert page.outside == [], f"the page tried to reach other hosts: {page.outside}"
        assert page.script_errors == [], f"script errors on the page: {page.script_errors}"
        assert page.requested, "no request was seen: the route guard did not run"
