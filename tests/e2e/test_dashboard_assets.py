"""The dashboard's files as a browser gets them: types, caching, the service worker's scope and shell, icons.

No browser and no platform: the dashboard router alone in Litestar's test client.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.dashboard import STATIC_DIR, dashboard_router


@pytest.fixture(scope="module")
def client():
    with TestClient(Litestar(route_handlers=[dashboard_router()])) as test_client:
        yield test_client


def png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n" and body[12:16] == b"IHDR"
    return struct.unpack(">II", body[16:24])


def test_the_page_is_served_at_the_root_with_a_strict_policy(client) -> None:
    reply = client.get("/")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in reply.headers["content-security-policy"]
    assert reply.headers["cache-control"] == "no-cache"
    again = client.get("/", headers={"If-None-Match": reply.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(("path", "media_type"), [
    ("/static/app.css", "text/css"), ("/static/js/app.js", "text/javascript"),
    ("/static/manifest.webmanifest", "application/manifest+json"), ("/static/icons/icon.svg", "image/svg+xml"),
    ("/static/icons/icon-192.png", "image/png")])
def test_assets_have_their_types(client, path: str, media_type: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(media_type)
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/index.html",
                                  "/static/sw.js", "/static/nothing.js", "/static/js/../../icons.py"])
def test_nothing_outside_the_shell_is_served(client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_manifest_names_installable_icons(client) -> None:
    manifest = client.get("/static/manifest.webmanifest").json()
    assert manifest["display"] == "standalone" and manifest["start_url"].startswith("/")
    sizes = {}
    for icon in manifest["icons"]:
        reply = client.get(icon["src"])
        assert reply.status_code == 200, icon["src"]
        if icon["type"] == "image/png":
            width, height = png_size(reply.content)
            assert icon["sizes"] == f"{width}x{height}"
            sizes[width] = icon["purpose"]
    assert {192, 512} <= set(sizes) and "maskable" in sizes.values()


def test_the_service_worker_covers_the_app_and_lists_a_shell_that_exists(client) -> None:
    reply = client.get("/sw.js")
    assert reply.status_code == 200 and reply.headers["service-worker-allowed"] == "/"
    text = reply.text
    version = re.search(r'^const VERSION = "([0-9a-f]{16})";$', text, re.M)
    shell = json.loads(re.search(r"^const SHELL = (.*);$", text, re.M).group(1))
    assert version, "the version is filled in from the files"
    assert "/" in shell and "/static/js/app.js" in shell and "/static/icons/icon-512.png" in shell
    for url in shell:
        assert client.get(url).status_code == 200, url


def test_every_module_import_resolves_and_nothing_is_minified() -> None:
    # A broken import path would only show in a browser; catch it here. Minified (third-party) code is not ours.
    for module in STATIC_DIR.rglob("*.js"):
        text = module.read_text()
        assert max(len(line) for line in text.splitlines()) < 200, f"{module.name} looks minified"
        for target in re.findall(r"\bfrom '(\.[^']+)';$", text, re.M):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"
    index = (STATIC_DIR / "index.html").read_text()
    for href in re.findall(r'href="/static/([^"]+)"', index) + re.findall(r'src="/static/([^"]+)"', index):
        assert (STATIC_DIR / href).is_file() or href.startswith("icons/"), href


def test_the_whole_shell_stays_small() -> None:
    total = sum(p.stat().st_size for p in Path(STATIC_DIR).rglob("*") if p.is_file())
    assert total < 200_000, f"the dashboard's files weigh {total} bytes"
