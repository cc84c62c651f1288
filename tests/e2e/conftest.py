"""End-to-end fixtures: the whole platform (`stoker up`) as a subprocess, and Debian's headless Chromium."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio

from eventstore.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: without the background-networking flags Chromium stalls on its own calls.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 40.0


@dataclass
class Platform:
    """A running `stoker up`: where its gateway answers, its data directory and its admin token."""

    url: str
    data_dir: Path
    admin_token: str
    process: subprocess.Popen[bytes]

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the gateway carrying `token` (the admin token by default)."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.admin_token}"},
                            timeout=20)

    def log_tail(self, lines: int = 40) -> str:
        """The end of `stoker up`'s own output and of each service's log, for failure messages."""
        parts = []
        for path in [self.data_dir / "stoker-up.log", *sorted((self.data_dir / "logs").glob("*.log"))]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)


def wait_until(check: Callable[[], Any], timeout: float, what: str, on_timeout: Callable[[], str] = str) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` (and `on_timeout()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{on_timeout()}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM `stoker up` (it stops its services in order), then SIGKILL whatever is left of the tree."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in family:  # services run in their own sessions: a killed supervisor would orphan them
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _ready(url: str) -> bool:
    """The gateway says the platform is healthy and a worker has registered."""
    health = httpx.get(f"{url}/api/v1/health", timeout=5)
    return health.status_code == 200 and health.json()["state"] == "ok"


def start_platform(data_dir: Path, port: int | None = None, args: Sequence[str] = ()) -> Platform:
    """`stoker up [args]` on `data_dir` (fresh or reused) with free ports, returned once healthy with a worker."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update(STOKER_DATA_DIR=str(data_dir), STOKER_GATEWAY_PORT=str(port), STOKER_LOG_FORMAT="json")
    with (data_dir / "stoker-up.log").open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "ops", "up", "--port", str(free_port()), *args], cwd=data_dir,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    running = Platform(url, data_dir, "", process)
    try:
        token_file = data_dir / "admin.token"
        wait_until(lambda: process.poll() is None and token_file.exists() and _ready(url), START_TIMEOUT_S,
                   "stoker up to become healthy", running.log_tail)
        running.admin_token = token_file.read_text().strip()
        with running.client() as client:
            wait_until(lambda: any(w["status"] == "healthy" for w in client.get("/api/v1/workers").json()["items"]),
                       START_TIMEOUT_S, "the local worker to register", running.log_tail)
    except BaseException:
        _stop(process)
        raise
    return running


def stop_platform(running: Platform) -> None:
    """Stop `stoker up` as Ctrl-C/SIGTERM would, and clean up anything left."""
    _stop(running.process)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`stoker up` with a fresh data directory, free ports and a local worker, once healthy."""
    running = start_platform(tmp_path_factory.mktemp("platform"))
    try:
        yield running
    finally:
        stop_platform(running)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright; no browser download needed)"
    return None


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (skips when either is missing)."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests leave screenshots and measurements (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                         "has_touch": True}


async def open_page(browser: Any, url: str, *, init_script: str | None = None, **context: Any) -> Any:
    """A page in a fresh browser context (its own storage) at `url`; page errors fail the test at teardown."""
    ctx = await browser.new_context(**(context or DESKTOP))
    if init_script:
        await ctx.add_init_script(init_script)
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    await page.goto(url)
    return page


async def sign_in(browser: Any, url: str, token: str, **context: Any) -> Any:
    """The dashboard, signed in through its login screen with `token`, showing the jobs page."""
    from playwright.async_api import expect

    page = await open_page(browser, f"{url}/", **context)
    await page.get_by_label("Access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    return page
