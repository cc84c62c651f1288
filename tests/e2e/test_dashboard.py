"""The dashboard in headless Chromium against the whole platform (`stoker up`): submit, watch, stop, sign out."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DESKTOP, PHONE, Platform, open_page, sign_in

pytestmark = pytest.mark.slow
JOB_TIMEOUT_MS = 30_000
STATIC = Path(__file__).resolve().parents[2] / "gateway" / "static"
# Collects every fraction a job page's progress bar shows, so the test can tell the bar moved.
RECORD_PROGRESS = """
window.__fractions = [];
new MutationObserver(() => {
  for (const bar of document.querySelectorAll('.job-body progress[data-fraction]')) {
    const f = bar.dataset.fraction;
    if (f !== '' && window.__fractions[window.__fractions.length - 1] !== f) window.__fractions.push(f);
  }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


def expect(target: Any) -> Any:
    """Playwright's `expect`, with room for a job to run."""
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=JOB_TIMEOUT_MS)
    return playwright_expect(target)


async def start_from_form(page: Any, workload: str, iterations: int, params: str = "") -> str:
    """Fill the New run form for a training and submit it; returns the new job's id from the address."""
    await page.get_by_role("link", name="New run").first.click()
    await page.get_by_role("radio", name="Training").check()
    await page.get_by_label("Workload", exact=True).fill(workload)
    await page.get_by_label("Iterations", exact=True).fill(str(iterations))
    await page.get_by_label("Parameters (JSON, optional)").fill(params)
    await page.get_by_role("button", name="Start training").click()
    await page.wait_for_url(re.compile(r"#/job/[A-Za-z0-9_-]+$"))
    return page.url.rsplit("/", 1)[1]


def badge(page: Any) -> Any:
    """The status badge in the job page's heading."""
    return page.locator(".page-head .badge")


def submit(platform: Platform, **body: Any) -> str:
    """Submit a job over REST (as a script would); returns its id."""
    with platform.client() as client:
        reply = client.post("/api/v1/jobs", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


async def test_submit_watch_and_stop_from_the_dashboard(browser, platform: Platform, artifacts: Path) -> None:
    page = await sign_in(browser, platform.url, platform.admin_token, **DESKTOP)
    await page.context.add_init_script(RECORD_PROGRESS)
    await page.reload()
    await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()

    # A short noop training from the form runs to completion.
    noop = await start_from_form(page, "noop", 5)
    await expect(badge(page)).to_have_text("completed")
    await expect(page.locator(".job-body progress")).to_have_attribute("data-fraction", "1")

    # A training that takes a few seconds: its bar moves through intermediate values, then completes.
    await page.evaluate("window.__fractions = []")
    moving = await start_from_form(page, "sleep", 20, '{"step_s": 0.25}')
    await expect(badge(page)).to_have_text("completed")
    await expect(page.locator(".job-body progress")).to_have_attribute("data-fraction", "1")
    seen = [float(f) for f in await page.evaluate("window.__fractions")]
    assert any(0 < f < 1 for f in seen), f"the progress bar never showed a value between 0 and 1: {seen}"
    assert seen[-1] == 1
    await expect(page.locator(".timeline")).to_contain_text("Completed")
    await page.screenshot(path=artifacts / "job-desktop.png", full_page=True)

    # A long job is stopped with the button.
    long_job = submit(platform, workload="sleep", max_iterations=600, params={"step_s": 0.1, "checkpoint_every": 50})
    await page.goto(f"{platform.url}/#/job/{long_job}")
    await expect(badge(page)).to_have_text("running")
    await page.get_by_role("button", name="Stop job").click()
    await page.get_by_role("button", name="Yes, stop it").click()
    await expect(badge(page)).to_have_text("stopped")
    await expect(page.locator(".timeline")).to_contain_text("Stop requested")

    # Its checkpoint can be evaluated from the job page: the form comes prefilled.
    await page.get_by_role("link", name="Evaluate newest checkpoint").click()
    await expect(page.get_by_role("radio", name="Evaluation")).to_be_checked()
    await expect(page.get_by_label("Training run to evaluate")).to_have_value(long_job)
    await page.get_by_label("Workload", exact=True).fill("noop")  # any workload runs as an evaluation
    await page.get_by_label("Episodes").fill("3")
    await page.get_by_role("button", name="Start evaluation").click()
    await page.wait_for_url(re.compile(r"#/job/[A-Za-z0-9_-]+$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Evaluation: noop")
    await expect(badge(page)).to_have_text("completed")

    # The jobs table updates live: a job submitted elsewhere appears and completes without a reload.
    await page.goto(f"{platform.url}/#/jobs")
    for job_id, status in ((noop, "completed"), (moving, "completed"), (long_job, "stopped")):
        await expect(page.locator(f'tr[data-job="{job_id}"]')).to_have_attribute("data-status", status)
    late = submit(platform, workload="noop", max_iterations=3)
    await expect(page.locator(f'tr[data-job="{late}"]')).to_have_attribute("data-status", "completed")
    await page.screenshot(path=artifacts / "jobs-desktop.png", full_page=True)
    assert page.errors == []

    phone = await sign_in(browser, platform.url, platform.admin_token, **PHONE)
    await expect(phone.locator(f'tr[data-job="{late}"]')).to_be_visible()
    await phone.screenshot(path=artifacts / "jobs-phone.png", full_page=True)
    await phone.goto(f"{platform.url}/#/job/{moving}")
    await expect(phone.locator(".chart-svg .line")).to_have_count(1)
    await phone.screenshot(path=artifacts / "job-phone.png", full_page=True)
    await phone.goto(f"{platform.url}/#/workers")
    await expect(phone.locator(".worker .badge")).to_have_text("healthy")
    await phone.screenshot(path=artifacts / "workers-phone.png", full_page=True)
    # Fits the screen: nothing wider than the phone's viewport.
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.errors == []
    await page.context.close()
    await phone.context.close()


async def test_a_revoked_token_shows_the_login_screen_not_data(browser, platform: Platform) -> None:
    with platform.client() as client:
        viewer = client.post("/api/v1/tokens", json={"role": "viewer", "name": "e2e viewer"}).json()
        submit(platform, workload="noop", max_iterations=1)

    # The login link (`#token=…`) signs in and leaves the address bar; a viewer sees no start/stop controls.
    page = await open_page(browser, f"{platform.url}/#token={viewer['token']}")
    await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    assert "token=" not in page.url
    await expect(page.locator("tr[data-job]").first).to_be_visible()
    await expect(page.locator("body")).to_have_attribute("data-role", "viewer")
    assert not await page.get_by_role("link", name="New run").first.is_visible()

    # Revoked while the page is open: the live connection is closed and the page returns to the login screen.
    with platform.client() as client:
        assert client.post(f"/api/v1/tokens/{viewer['token_id']}/revoke").status_code == 200
    await expect(page.get_by_label("Access token")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("no longer accepted")
    assert await page.locator("tr[data-job]").count() == 0
    assert await page.evaluate("localStorage.getItem('stoker.token')") is None

    # A page opened later with the revoked token stored shows the login screen and never a row of data.
    stale = await open_page(browser, f"{platform.url}/",
                            init_script=f"localStorage.setItem('stoker.token', {json.dumps(viewer['token'])})")
    await expect(stale.get_by_label("Access token")).to_be_visible()
    assert await stale.locator("tr[data-job], .worker, .job-body").count() == 0
    assert await stale.locator("#nav").is_hidden()
    assert page.errors == [] and stale.errors == []
    await page.context.close()
    await stale.context.close()


async def test_the_shell_is_small_and_paints_quickly(browser, platform: Platform, artifacts: Path) -> None:
    page = await open_page(browser, f"{platform.url}/")
    await expect(page.get_by_label("Access token")).to_be_visible()
    timing = await page.evaluate("""() => {
        const paint = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
        const nav = performance.getEntriesByType('navigation')[0];
        const resources = performance.getEntriesByType('resource').filter((r) => !r.name.includes('/api/'));
        return {first_contentful_paint_ms: paint ? paint.startTime : null,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                transferred_bytes: nav.encodedBodySize + resources.reduce((n, r) => n + r.encodedBodySize, 0),
                requests: resources.length + 1};
    }""")
    # Signed in, on a reload: when the jobs page first paints and when its rows are on screen.
    await page.get_by_label("Access token").fill(platform.admin_token)
    await page.get_by_role("button", name="Sign in").click()
    # Signing in checks the token with the gateway before it stores it: reload only once it is stored,
    # or the reload lands on the login screen again.
    await expect(page.locator("#nav")).to_be_visible()
    await page.reload()
    # A function, not an expression: the page's CSP forbids eval, which an expression string would need.
    await page.wait_for_function("() => !!document.querySelector('tr[data-job]') || "
                                 "!!document.querySelector('.list-status')?.textContent.startsWith('No jobs')")
    signed_in = await page.evaluate("""() => ({
        signed_in_first_contentful_paint_ms: performance.getEntriesByType('paint')
            .find((e) => e.name === 'first-contentful-paint')?.startTime ?? null,
        signed_in_jobs_shown_ms: performance.now()})""")
    with platform.client() as client:
        shell = [client.get(f"/static/{name}") for name in ("manifest.webmanifest", "icons/icon-192.png",
                                                            "icons/icon-512.png", "icons/maskable-512.png")]
    assert all(r.status_code == 200 for r in shell)
    on_disk = sum(p.stat().st_size for p in STATIC.rglob("*") if p.is_file())
    icons = sum(len(r.content) for r in shell[1:])
    report = {**timing, **signed_in, "static_files_bytes": on_disk, "icons_png_bytes": icons}
    (artifacts / "dashboard-performance.json").write_text(json.dumps(report, indent=2))
    print("dashboard:", report)
    # Sizes are facts of the build, not timings: the page and everything it loads stay under 200 KB.
    assert timing["transferred_bytes"] < 200_000
    assert on_disk < 200_000
    assert page.errors == []
    await page.context.close()
