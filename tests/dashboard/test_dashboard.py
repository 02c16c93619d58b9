"""The dashboard in a real headless Chromium, against a real ``qbm api`` and ``qbm worker``.

Each test drives the page as a person would (labels, buttons by their accessible names), checks what the page
shows against what the API says, and saves a screenshot under its tmp_path. The browser may reach nothing but
127.0.0.1 (see conftest.py: any other request fails the test).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.waiting import wait_until

pytestmark = pytest.mark.dashboard

MOVING = re.compile(r"^([1-9]|[1-9][0-9])$")  # strictly between 0 and 100


def call(api: Any, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(method, f"{api.url}/api/v1{path}", headers=headers, timeout=10, **kwargs)


def finished_job(api: Any, job_id: str) -> dict:
    def done() -> dict | None:
        job = call(api, "GET", f"/jobs/{job_id}").json()["result"]
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_until(done, timeout=60, what=f"job {job_id} to end")


def local_time_title(iso: str) -> str:
    """The UTC hover text the page puts on a time."""
    return iso[:19].replace("T", " ") + " UTC"


def test_backup_started_from_the_overview_moves_its_progress_bar_to_100(api, worker, qdrant, open_dashboard):
    qdrant.create_collection("docs", points=1200, size_bytes=3 * 1024 * 1024, shard_number=2)
    qdrant.create_collection("products", points=300)
    qdrant.create_collection("images", points=50)
    # A failed job beforehand, so the jobs page has an error sentence to show.
    qdrant.faults.fail_next(1, status=400, path_contains="/collections/products/snapshots")
    failed = call(api, "POST", "/jobs", json={"type": "backup", "collection_name": "products"}).json()["result"]
    failed = finished_job(api, failed["id"])
    assert failed["status"] == "failed" and failed["error"]

    dash = open_dashboard(api)
    page = dash.open()
    expect(page.get_by_test_id("cluster-status")).to_have_text("green")
    docs = page.locator("tr[data-collection='docs']")
    expect(docs).to_contain_text("1200")
    expect(docs).to_contain_text("2 shard(s)")
    expect(docs).to_contain_text("no backup")

    qdrant.faults.throttle(1024 * 1024)  # about 3 s of transfer: long enough to see the bar move
    page.get_by_role("button", name="Back up docs").click()
    expect(page).to_have_url(re.compile(r"#jobs$"))
    row = page.locator("tr[data-job]", has_text="docs")
    bar = row.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", MOVING, timeout=30_000)
    dash.screenshot("jobs-running", readme_name="dashboard-jobs.png")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=60_000)
    expect(bar).to_contain_text("100 %")
    expect(row.locator(".badge")).to_have_text("completed")

    # The failed job shows its sentence, alone when the list is filtered to failed jobs.
    page.get_by_label("Status").select_option("failed")
    expect(page.locator("tr[data-job]")).to_have_count(1)
    expect(page.locator(f"tr[data-job='{failed['id']}'] .job-error")).to_have_text(failed["error"])
    dash.screenshot("jobs-failed")
    # Retry resumes it (the fault was a one-off): it leaves the failed list and completes.
    page.get_by_role("button", name=f"Retry job {failed['id']}").click()
    expect(page.locator("tr[data-job]")).to_have_count(0)
    page.get_by_label("Status").select_option("")
    expect(page.locator(f"tr[data-job='{failed['id']}'] .badge")).to_have_text("completed", timeout=60_000)
    expect(page.locator(f"tr[data-job='{failed['id']}'] .job-error")).to_be_hidden()

    # A schedule for docs whose run fails: listed on the overview, and docs stands out.
    schedule = call(api, "POST", "/schedules", json={"name": "docs-nightly", "cron": "30 2 * * *",
                                                     "collections": ["docs"]}).json()["result"]
    qdrant.faults.fail_next(1, status=400, path_contains="/collections/docs/snapshots")
    run = call(api, "POST", f"/schedules/{schedule['id']}/run").json()["result"]
    run_job = finished_job(api, run["job_ids"][0])
    assert run_job["status"] == "failed"
    wait_until(lambda: call(api, "GET", f"/schedules/{schedule['id']}").json()["result"]["last_run"]["status"]
               == "failed", what="the schedule's last run to be failed")

    # Back on the overview: docs's newest backup in local time with UTC on hover; images has none.
    page.get_by_role("link", name="Overview").click()
    failed_runs = page.locator(".card", has_text="Schedules whose last run failed")
    expect(failed_runs).to_contain_text("docs-nightly")
    expect(failed_runs).to_contain_text(f"docs: {run_job['error']}")
    expect(page.locator("tr[data-collection='docs']")).to_contain_text(
        "schedule docs-nightly ran since without a newer backup")
    backup = call(api, "GET", "/backups", params={"storage_id": _default_storage(api)["id"],
                                                   "collection": "docs"}).json()["result"]["items"][0]
    newest = page.locator("tr[data-collection='docs'] time")
    expect(newest).to_have_attribute("title", local_time_title(backup["created_at"]))
    expect(newest).not_to_have_text(re.compile(re.escape(backup["created_at"][11:16])))  # Kolkata is UTC+05:30
    expect(page.locator("tr[data-collection='docs']")).not_to_contain_text("no backup")
    expect(page.locator("tr[data-collection='products'] .warn")).to_be_hidden()
    expect(page.locator("tr[data-collection='images']")).to_contain_text("no backup")
    dash.screenshot("overview", readme_name="dashboard-overview.png")


def _default_storage(api: Any) -> dict:
    return next(s for s in call(api, "GET", "/storage").json()["result"] if s["is_default"])


def test_a_backup_is_restored_under_a_new_name_then_deleted_after_confirmation(api, worker, qdrant, open_dashboard):
    qdrant.create_collection("docs", points=500)
    job = call(api, "POST", "/jobs", json={"type": "backup", "collection_name": "docs"}).json()["result"]
    assert finished_job(api, job["id"])["status"] == "completed"
    backup_id = job["snapshot_name"] or finished_job(api, job["id"])["snapshot_name"]
    manifest = call(api, "GET", f"/backups/{_default_storage(api)['id']}/{backup_id}").json()["result"]

    dash = open_dashboard(api)
    page = dash.open("#backups")
    row = page.locator(f"tr[data-backup='{backup_id}']")
    expect(row).to_contain_text("docs")
    expect(row.locator("code")).to_have_attribute("title", manifest["sha256"])
    expect(row).to_contain_text(manifest["qdrant_version"])
    dash.screenshot("backups")

    row.get_by_role("button", name=f"Restore backup {backup_id}").click()
    # The dialog takes the keyboard: focus is in its field, Enter restores.
    expect(page.get_by_label("Restore as collection")).to_be_focused()
    page.keyboard.type("docs-copy")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#jobs$"))
    restore = page.locator("tr[data-job]", has_text="docs-copy")
    expect(restore).to_contain_text("restore")
    expect(restore).to_contain_text("docs → docs-copy")
    expect(restore.locator(".badge")).to_have_text("completed", timeout=60_000)
    expect(restore.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert qdrant.collection_exists("docs-copy") and qdrant.points_count("docs-copy") == 500
    dash.screenshot("restored")

    # Delete asks first; "Keep it" keeps it.
    page.get_by_role("link", name="Backups").click()
    row.get_by_role("button", name=f"Delete backup {backup_id}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(backup_id)
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    row.get_by_role("button", name=f"Delete backup {backup_id}").click()
    page.keyboard.press("Escape")  # so does Escape
    expect(dialog).to_be_hidden()
    assert call(api, "GET", f"/backups/{_default_storage(api)['id']}/{backup_id}").status_code == 200
    row.get_by_role("button", name=f"Delete backup {backup_id}").click()
    dialog.get_by_role("button", name="Delete backup").click()
    expect(row).to_have_count(0)
    assert call(api, "GET", f"/backups/{_default_storage(api)['id']}/{backup_id}").status_code == 404


def test_a_schedule_refused_by_the_api_shows_the_message_at_its_field_then_is_created(api, qdrant, open_dashboard):
    qdrant.create_collection("docs", points=10)
    dash = open_dashboard(api)
    page = dash.open("#schedules")
    form = page.locator("form:has(#sch-name)")
    form.get_by_label("Name").fill("nightly")
    form.get_by_label("Cron (5 fields)").fill("61 2 * * *")
    form.get_by_label("Time zone (IANA)").fill("Europe/Berlin")
    form.get_by_label("Keep the newest").fill("7")
    form.get_by_role("button", name="Create schedule").click()

    refused = call(api, "POST", "/schedules", json={"name": "nightly", "cron": "61 2 * * *",
                                                    "timezone": "Europe/Berlin", "collections": ["*"]})
    assert refused.status_code == 422
    message = refused.json()["status"]["error"]
    assert message.startswith("cron: ")
    expect(page.locator("#sch-cron-error")).to_have_text(message)
    expect(form.get_by_label("Cron (5 fields)")).to_have_attribute("aria-describedby", "sch-cron-error")
    dash.screenshot("schedule-refused")
    assert call(api, "GET", "/schedules").json()["result"] == []

    form.get_by_label("Cron (5 fields)").fill("30 2 * * *")
    form.get_by_role("button", name="Create schedule").click()
    row = page.locator("tr[data-schedule='nightly']")
    expect(row).to_contain_text("cron 30 2 * * * (Europe/Berlin)")
    expect(row).to_contain_text("keeps the 7 newest")
    expect(page.locator("#sch-cron-error")).to_be_hidden()
    stored = call(api, "GET", "/schedules").json()["result"][0]
    expect(row.locator(".next-run time")).to_have_attribute("title", local_time_title(stored["next_run_time"]))
    expect(row).to_contain_text("never")

    row.get_by_role("button", name="Disable schedule nightly").click()
    expect(row).to_contain_text("disabled")
    assert call(api, "GET", f"/schedules/{stored['id']}").json()["result"]["enabled"] is False
    row.get_by_role("button", name="Enable schedule nightly").click()
    expect(row.get_by_role("button", name="Disable schedule nightly")).to_be_visible()

    row.get_by_role("button", name="Edit schedule nightly").click()
    expect(form.get_by_role("heading")).to_have_text("Edit schedule nightly")
    expect(form.get_by_label("Cron (5 fields)")).to_have_value("30 2 * * *")
    form.get_by_label("Keep the newest").fill("3")
    form.get_by_role("button", name="Save schedule").click()
    expect(row).to_contain_text("keeps the 3 newest")
    assert call(api, "GET", f"/schedules/{stored['id']}").json()["result"]["retention"]["keep_last"] == 3
    expect(form.get_by_role("heading")).to_have_text("New schedule")

    row.get_by_role("button", name="Run schedule nightly now").click()
    expect(row).not_to_contain_text("never")
    last_run = call(api, "GET", f"/schedules/{stored['id']}").json()["result"]["last_run"]
    assert last_run["manual"] is True and len(last_run["job_ids"]) == 1
    expect(row).to_contain_text(last_run["status"])
    dash.screenshot("schedules")


def test_cancelling_a_running_backup_from_the_jobs_page(api, worker, qdrant, open_dashboard, dash_config):
    qdrant.create_collection("big", points=1000, size_bytes=8 * 1024 * 1024)
    qdrant.faults.throttle(128 * 1024)  # a minute of transfer unless cancelled
    dash = open_dashboard(api)
    page = dash.open()
    page.get_by_role("button", name="Back up big").click()
    row = page.locator("tr[data-job]", has_text="big")
    expect(row.locator(".badge")).to_have_text("running", timeout=30_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", MOVING, timeout=30_000)
    job_id = row.get_attribute("data-job")
    # The overview lists it among the running jobs.
    page.get_by_role("link", name="Overview").click()
    expect(page.locator(".card", has_text="Running jobs")).to_contain_text("backup of big: running")
    page.get_by_role("link", name="Jobs", exact=True).click()
    row.get_by_role("button", name=f"Cancel job {job_id}").click()
    expect(row.locator(".badge")).to_have_text("cancelled", timeout=30_000)
    expect(row.get_by_role("button", name=f"Retry job {job_id}")).to_be_visible()
    assert call(api, "GET", f"/jobs/{job_id}").json()["result"]["status"] == "cancelled"
    assert not list(Path(dash_config.data_dir).rglob("manifest.json")), "a cancelled backup left a manifest"
    dash.screenshot("cancelled")


def test_with_api_keys_the_page_shows_nothing_until_a_right_key_is_given(start_api, qdrant, open_dashboard):
    api = start_api(api_keys="right-key-0123")
    qdrant.create_collection("secretive", points=10)
    dash = open_dashboard(api)
    sent: list[dict[str, str]] = []
    dash.page.on("request", lambda r: sent.append(r.headers) if "/api/v1/" in r.url else None)
    page = dash.open()
    key_field = page.get_by_label("API key", exact=True)
    expect(key_field).to_be_visible()
    expect(page.get_by_text("secretive")).to_have_count(0)
    expect(page.locator("tr[data-collection]")).to_have_count(0)
    dash.screenshot("key-asked")

    key_field.fill("wrong-key")
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_text("That key was refused.")).to_be_visible()
    expect(page.locator("tr[data-collection]")).to_have_count(0)

    sent.clear()
    key_field.fill("right-key-0123")
    key_field.press("Enter")
    expect(page.locator("tr[data-collection='secretive']")).to_be_visible()
    expect(key_field).to_be_hidden()
    assert sent and all(h.get("authorization") == "Bearer right-key-0123" for h in sent)
    dash.screenshot("key-accepted")

    page.get_by_role("button", name="Forget API key").click()
    expect(key_field).to_be_visible()
    expect(page.locator("tr[data-collection]")).to_have_count(0)


def test_storage_backends_are_created_tested_and_made_default_with_refusals_at_their_field(
        api, open_dashboard, dash_config):
    dash = open_dashboard(api)
    page = dash.open("#storage")
    form = page.get_by_role("form", name="New storage backend")
    expect(page.locator("tr[data-storage]")).to_have_count(1)  # the default registered at first start

    form.get_by_label("Name").fill("archive")
    form.get_by_label("Directory").fill("/etc/qbm-outside")
    form.get_by_role("button", name="Create storage backend").click()
    refused = call(api, "POST", "/storage", json={"name": "archive", "type": "local", "path": "/etc/qbm-outside",
                                                  "is_default": False})
    assert refused.status_code == 422
    expect(page.locator("#st-path-error")).to_have_text(refused.json()["status"]["error"])
    dash.screenshot("storage-refused")

    form.get_by_label("Directory").fill(str(Path(dash_config.data_dir) / "archive"))
    form.get_by_role("button", name="Test", exact=True).click()
    expect(form.get_by_role("status")).to_contain_text("Test passed")
    form.get_by_role("button", name="Create storage backend").click()
    row = page.locator("tr[data-storage='archive']")
    expect(row).to_be_visible()
    expect(page.locator("#st-path-error")).to_be_hidden()
    row.get_by_role("button", name="Make archive the default").click()
    expect(row.locator(".badge")).to_have_text("default")
    assert _default_storage(api)["name"] == "archive"

    # S3 secrets are write-only: a password field, empty after saving, never in what the API returns.
    form.get_by_label("Type").select_option("s3")
    expect(form.get_by_label("Secret key (write-only: never shown again)")).to_have_attribute("type", "password")
    dash.screenshot("storage")


def test_the_pages_read_on_a_phone_without_sideways_scrolling(api, qdrant, open_dashboard):
    qdrant.create_collection("docs", points=10)
    call(api, "POST", "/schedules", json={"name": "hourly", "interval_seconds": 3600, "collections": ["docs"],
                                          "retention": {"keep_last": 1, "max_age_days": 30}})
    dash = open_dashboard(api, viewport={"width": 390, "height": 844})
    page = dash.open()
    expect(page.locator("tr[data-collection='docs']")).to_be_visible()
    for view in ("overview", "jobs", "backups", "schedules", "storage"):
        page.goto(f"{api.url}/#{view}")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), view
        dash.screenshot(f"phone-{view}")
    expect(page.locator("tr[data-schedule='hourly']")).to_contain_text(
        "keeps the newest, deletes those older than 30 days")
    # The keyboard reaches the navigation and the controls: Tab moves focus to the first link.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON")


def test_api_docs_load_without_any_outside_request(api, open_dashboard):
    dash = open_dashboard(api)
    page = dash.open("docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Qdrant Backup Manager", timeout=30_000)
    assert any("/dashboard/static/vendor/swagger-ui-dist" in url for url in dash.requested)
    dash.screenshot("docs")


def test_an_s3_secret_key_is_sent_once_and_never_shown(api, open_dashboard, s3_server, s3_bucket):
    dash = open_dashboard(api)
    page = dash.open("#storage")
    form = page.locator("form:has(#st-name)")
    form.get_by_label("Name").fill("minio")
    form.get_by_label("Type").select_option("s3")
    form.get_by_label("Endpoint URL").fill(s3_server.endpoint)
    form.get_by_label("Bucket").fill(s3_bucket)
    form.get_by_label("Region").fill(s3_server.region)
    form.get_by_label("Access key").fill(s3_server.access_key)
    form.get_by_label("Secret key (write-only: never shown again)").fill(s3_server.secret_key)
    form.get_by_role("button", name="Test", exact=True).click()
    expect(form.get_by_role("status")).to_contain_text("Test passed")
    form.get_by_role("button", name="Create storage backend").click()
    expect(page.locator("tr[data-storage='minio']")).to_contain_text(s3_bucket)
    expect(form.get_by_label("Secret key (write-only: never shown again)")).to_have_value("")
    assert s3_server.secret_key not in page.content()
    stored = next(s for s in call(api, "GET", "/storage").json()["result"] if s["name"] == "minio")
    assert "s3_secret_key" not in stored
    dash.screenshot("storage-s3")


def test_jobs_are_paged_and_filtered_by_type(api, qdrant, open_dashboard):
    qdrant.create_collection("docs", points=10)
    ids = [call(api, "POST", "/jobs", json={"type": "backup", "collection_name": "docs"}).json()["result"]["id"]
           for _ in range(23)]  # no worker: they stay pending
    dash = open_dashboard(api)
    page = dash.open("#jobs")
    filters = page.locator("section:has(#jobs-title) form.filters")
    expect(page.locator("tr[data-job]")).to_have_count(20)
    expect(page.get_by_role("navigation", name="Job pages")).to_contain_text("Page 1 of 2 (23 jobs)")
    expect(page.locator(f"tr[data-job='{ids[-1]}']")).to_be_visible()  # newest first
    page.get_by_role("button", name="Next").click()
    expect(page.locator("tr[data-job]")).to_have_count(3)
    expect(page.locator(f"tr[data-job='{ids[0]}']")).to_be_visible()
    filters.get_by_label("Type").select_option("restore")
    expect(page.locator("tr[data-job]")).to_have_count(0)
    expect(page.get_by_text("No jobs.")).to_be_visible()
    filters.get_by_label("Type").select_option("backup")
    filters.get_by_label("Status").select_option("pending")
    expect(page.get_by_role("navigation", name="Job pages")).to_contain_text("Page 1 of 2 (23 jobs)")
    dash.screenshot("jobs-paged")


def test_the_overview_shows_the_cluster_and_its_peers(api, qdrant, open_dashboard):
    qdrant.enable_cluster({222: "http://10.0.0.2:6335/"})
    qdrant.create_collection("docs", points=10)
    cluster = call(api, "GET", "/cluster").json()["result"]
    dash = open_dashboard(api)
    page = dash.open()
    card = page.get_by_role("region", name="Cluster")
    expect(card.get_by_test_id("cluster-status")).to_have_text(cluster["status"])
    expect(card).to_contain_text("cluster mode")
    expect(card).to_contain_text(f"Peer {qdrant.peer_id} (this node)")
    expect(card).to_contain_text("Peer 222: http://10.0.0.2:6335/")
    expect(card).to_contain_text(f"Raft leader: peer {qdrant.peer_id}")
    dash.screenshot("cluster")
