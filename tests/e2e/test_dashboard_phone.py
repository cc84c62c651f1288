"""The dashboard's "On your phone" page in headless Chromium: the QR code shown is the link, and a new LAN
address (discovery's NetworkWatch, fed by a fake interface source) redraws it without a reload."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import unquote

import pytest_asyncio

from contracts.network import host_id
from services.discovery.lan import NetworkWatch
from tests.e2e.conftest import PHONE, sign_in
from tests.integration.gateway_support import Stack, gateway_stack
from tests.integration.test_lan_phone import Interfaces, read_qr, svg_modules


@pytest_asyncio.fixture
async def stack(browser, nats_server, nc, topology, tmp_path):
    """A real gateway that listens "beyond loopback" as far as its settings say (uvicorn stays on 127.0.0.1)."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, host="0.0.0.0") as running:
        yield running


async def shown_link(page) -> str:
    """The URL in the QR code the page shows (its image's SVG, read back with zxing-cpp)."""
    src = await page.locator(".phone img.qr").get_attribute("src")
    return read_qr(svg_modules(unquote(src.split(",", 1)[1])))


async def test_the_phone_page_shows_the_link_and_redraws_it_when_the_address_changes(
        stack: Stack, browser, artifacts: Path) -> None:
    from playwright.async_api import expect

    source = Interfaces("192.168.77.20")
    watch = NetworkWatch(stack.log, source, host=host_id(socket.gethostname()))
    await watch.load()
    await watch.check()
    port = stack.url.rsplit(":", 1)[1]

    page = await sign_in(browser, stack.url, stack.tokens["viewer"], **PHONE)
    await page.get_by_role("link", name="On your phone").click()
    panel = page.locator("section.phone")
    await expect(panel).to_have_attribute("data-preferred", "192.168.77.20")
    assert (await shown_link(page)).startswith(f"http://192.168.77.20:{port}/#token=stk_")
    await expect(panel.locator(".addresses")).to_contain_text("skipped: container or VM bridge")
    await page.screenshot(path=artifacts / "phone-panel.png", full_page=True)

    source.address = "192.168.77.37"
    await watch.check()
    await expect(panel).to_have_attribute("data-preferred", "192.168.77.37")  # live, no reload
    assert (await shown_link(page)).startswith(f"http://192.168.77.37:{port}/#token=stk_")
    assert page.errors == []
