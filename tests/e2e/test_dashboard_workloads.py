"""The dashboard's workloads page and the New run form built from a workload's declared parameters, with a map
uploaded and picked on the form, in headless Chromium against `stoker up` (its worker describes its workloads)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.e2e.conftest import DESKTOP, Platform, sign_in
from tests.e2e.test_dashboard import expect

pytestmark = pytest.mark.slow


def described(platform: Platform, name: str, timeout: float = 90.0) -> dict:
    """The workload once the local worker has offered its parameters (it describes them after registering)."""
    deadline = time.monotonic() + timeout
    with platform.client() as client:
        while True:
            offers = {w["name"]: w for w in client.get("/api/v1/workloads").json()["workloads"]}
            if offers.get(name, {}).get("declares_params"):
                return offers[name]
            assert time.monotonic() < deadline, f"{name} not described: {offers}"
            time.sleep(0.5)


async def test_workloads_page_and_a_form_from_the_declared_parameters_with_a_map(browser, platform: Platform) -> None:
    described(platform, "2048")
    described(platform, "noop")
    page: Any = await sign_in(browser, platform.url, platform.admin_token, **DESKTOP)

    await page.get_by_role("link", name="Workloads").click()
    await expect(page.get_by_role("heading", name="Workloads", exact=True)).to_be_visible()
    card = page.locator('article[data-workload="2048"]')
    await expect(card.locator('tr[data-param="learning_rate"]')).to_contain_text("Adam step size")
    await expect(card.locator('tr[data-param="batch_size"]')).to_contain_text("minibatch")
    await expect(page.locator('article[data-workload="2048-eval"]')).to_contain_text("Runs the evaluations of 2048")

    await page.get_by_role("link", name="New run").first.click()
    await page.get_by_role("radio", name="Training").check()
    await page.get_by_label("Workload", exact=True).fill("noop")
    every = page.get_by_label("checkpoint_every", exact=True)
    await expect(every).to_be_visible()  # the field comes from noop's schema
    await every.fill("2")
    await page.get_by_label("Iterations", exact=True).fill("4")

    # Upload a map on the form; it is picked at once.
    await page.get_by_text("Upload a map").click()
    await page.get_by_label("Map file").set_input_files(
        {"name": "arena.cfg", "mimeType": "text/plain", "buffer": b"width=4\nheight=4\n"})
    await page.get_by_label("Map name (optional)").fill("Arena")
    await page.get_by_role("button", name="Upload map").click()
    await expect(page.get_by_role("status").filter(has_text="Uploaded Arena")).to_be_visible()
    map_id = int(await page.get_by_label("Map", exact=True).input_value())

    # An undeclared parameter is refused with the known ones named; unchecking "Check parameters" lets it through.
    await page.get_by_label("Parameters (JSON, optional)").fill('{"bogus": 1}')
    await page.get_by_role("button", name="Start training").click()
    await expect(page.get_by_role("alert")).to_contain_text("unknown parameter 'bogus'")
    await expect(page.get_by_role("alert")).to_contain_text("checkpoint_every")
    await page.get_by_label("Parameters (JSON, optional)").fill("")
    await page.get_by_role("button", name="Start training").click()
    await page.wait_for_url(re.compile(r"#/job/[A-Za-z0-9_-]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    with platform.client() as client:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["params"] == {"checkpoint_every": 2} and job["map_id"] == map_id and job["max_iterations"] == 4
    assert not page.errors, page.errors
