"""The dashboard against a gateway fed with events we write ourselves: long curves, a requeue after a lost
worker, evaluation results, and a network drop that the live connection resumes across without missing anything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from contracts import events as ev
from contracts.base import new_id, utcnow
from contracts.codec import encode
from contracts.telemetry import EpisodeReport, JobProgress
from tests.e2e.conftest import DESKTOP, PHONE, open_page, sign_in
from tests.integration.gateway_support import Stack, gateway_stack

pytestmark = pytest.mark.slow
TIMEOUT_MS = 20_000


def expect(target: Any) -> Any:
    """Playwright's `expect`, with a timeout for a loaded machine."""
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect(target)


class Relay:
    """A TCP relay in front of the gateway that the test can cut, like a phone losing its network."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `restore`."""
        self.up = False
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    def restore(self) -> None:
        self.up = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        self.links -= {writer, upstream_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@pytest_asyncio.fixture
async def stack(browser, nats_server, nc, topology, tmp_path):
    """A real gateway (REST, socket, dashboard) with a projector; no services and no workers.

    The test writes the jobs' histories itself (backdated, on workers that do not exist), so no
    scheduler may follow the log beside it: a real one would requeue those jobs.
    """
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False) as running:
        yield running


async def publish(stack: Stack, message: Any, kind: str, job_id: str, worker_id: str | None = None) -> None:
    """A job's sample on the subject of the worker that sends it (a progress sample names it too)."""
    worker_id = worker_id or message.worker_id
    await stack.nc.jetstream().publish(stack.topology.job_telemetry(kind, job_id, worker_id), encode(message))


async def lost_worker_training(stack: Stack) -> str:
    """A training that lost its first worker at iteration 3,400 and resumed on another from its checkpoint."""
    job_id = new_id()
    start = utcnow() - timedelta(minutes=10)
    at = lambda seconds: start + timedelta(seconds=seconds)  # noqa: E731
    log = stack.log
    await log.append("job", job_id, [
        ev.JobSubmitted(job_id=job_id, kind="train", workload="2048", max_iterations=6000, params={"lr": 0.001},
                        submitted_at=at(0)),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id="gpu-box", assigned_at=at(0))], 0)
    await log.append("job", job_id, [ev.JobStarted(job_id=job_id, attempt=1, worker_id="gpu-box", started_at=at(1))])
    for iteration in (1000, 2000, 3000):
        await log.append("job", job_id, [ev.JobCheckpointed(job_id=job_id, attempt=1, iteration=iteration,
                                                            name=f"{job_id}/1-{iteration}", sha256="a" * 64,
                                                            size=2_400_000, checkpointed_at=at(iteration / 10))])
    await log.append("job", job_id, [
        ev.JobRequeued(job_id=job_id, attempt=2, reason="worker_lost", requeued_at=at(345)),
        ev.JobAssigned(job_id=job_id, attempt=2, worker_id="laptop", assigned_at=at(346))])
    await log.append("job", job_id, [ev.JobStarted(job_id=job_id, attempt=2, worker_id="laptop", resumed_from=3000,
                                                   started_at=at(347))])
    samples = [(1, i, at(i / 10)) for i in range(1, 3401)] + [(2, i, at(347 + (i - 3000) / 10))
                                                                for i in range(3001, 4501)]
    for attempt, i, moment in samples:
        loss = 2.0 * math.exp(-i / 1500) + 0.05 * math.sin(i / 7) ** 2
        metrics = {"score": 400 + i * 0.8 + 60 * math.sin(i / 50), "epsilon": 1 / (1 + i / 500)}
        worker = "gpu-box" if attempt == 1 else "laptop"
        await publish(stack, JobProgress(job_id=job_id, attempt=attempt, worker_id=worker, iteration=i, total=6000,
                                         loss=loss, metrics=metrics, at=moment), "progress", job_id)
    return job_id


async def finished_evaluation(stack: Stack, of: str, episodes: int = 50) -> str:
    """An evaluation run of `of` with every episode reported."""
    job_id = new_id()
    now = utcnow()
    await stack.log.append("job", job_id, [
        ev.JobSubmitted(job_id=job_id, kind="eval", workload="2048-eval", episodes=episodes, checkpoint_of=of,
                        submitted_at=now),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id="laptop", assigned_at=now)], 0)
    await stack.log.append("job", job_id, [ev.JobStarted(job_id=job_id, attempt=1, worker_id="laptop", started_at=now)])
    for n in range(1, episodes + 1):
        score = 2000 + 1500 * math.sin(n * 1.7) ** 2 + 40 * n
        await publish(stack, EpisodeReport(job_id=job_id, attempt=1, episode=n, score=score,
                                           figures={"max_tile": 2.0 ** (8 + n % 4), "moves": 150.0 + n},
                                           log=[{"move": 1, "action": "up", "reward": 4}], at=now), "episode", job_id,
                      "laptop")
    await stack.log.append("job", job_id, [ev.JobCompleted(job_id=job_id, attempt=1, result={"episodes": episodes},
                                                           completed_at=utcnow())])
    return job_id


async def test_curves_timeline_and_evaluation_results(stack: Stack, browser, artifacts: Path) -> None:
    training = await lost_worker_training(stack)
    evaluation = await finished_evaluation(stack, training)
    await stack.projected()

    page = await sign_in(browser, stack.url, stack.tokens["admin"], **DESKTOP)
    await page.goto(f"{stack.url}/#/job/{training}")
    loss = page.locator("figure.chart", has_text="Loss")
    # 4,500 iterations remain once the resumed attempt's reports replace the lost attempt's after 3,000.
    await expect(loss.locator(".chart-summary")).to_contain_text("4,500 points")
    segments = await loss.locator(".line").get_attribute("d")
    assert 100 < segments.count("L") < 4500, "thousands of points are drawn downsampled, one column at a time"
    await expect(page.locator(".timeline")).to_contain_text("Requeued because its worker was lost; attempt 2 next")
    await expect(page.locator(".timeline")).to_contain_text("resuming from iteration 3,000")
    await expect(page.locator(".progress-line")).to_contain_text("4,500 of 6,000 iterations")
    await expect(page.locator(".progress-line")).to_contain_text("left")  # an ETA while it runs
    await expect(page.locator(".page-head .badge")).to_have_text("running")
    await page.screenshot(path=artifacts / "job-curves-desktop.png", full_page=True)

    # Keyboard and screen reader users get the same figures as a table.
    await loss.get_by_text("Data as a table").click()
    await expect(loss.locator("table tbody tr").first).to_be_visible()

    await page.goto(f"{stack.url}/#/job/{evaluation}")
    results = page.locator("section", has_text="Evaluation results")
    await expect(results.locator("table.episodes tbody tr")).to_have_count(50)
    await expect(results.locator("table").first).to_contain_text("score")
    assert await results.locator(".chart-svg .bar").count() >= 5
    await page.screenshot(path=artifacts / "evaluation-desktop.png", full_page=True)

    phone = await sign_in(browser, stack.url, stack.tokens["admin"], **PHONE, color_scheme="dark")
    await phone.goto(f"{stack.url}/#/job/{training}")
    await expect(phone.locator("figure.chart", has_text="Loss").locator(".chart-summary")).to_contain_text("4,500")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await phone.screenshot(path=artifacts / "job-curves-phone-dark.png", full_page=True)
    assert page.errors == [] and phone.errors == []
    await page.context.close()
    await phone.context.close()


CLIENT_CHECKS = """async () => {
  const {ticks, downsample, bins} = await import('/static/js/chart.js');
  const {ProgressHistory, evolve} = await import('/static/js/model.js');
  const n = 100000;
  const xs = Float64Array.from({length: n}, (_, i) => i + 1);
  const ys = Array.from({length: n}, (_, i) => (i === 54321 ? 99 : Math.sin(i / 1000)));
  ys[10] = null;
  const [dx, dy] = downsample(xs, ys, 500);
  const history = new ProgressHistory();
  const sample = (seq, attempt, iteration) => ({seq, attempt, iteration, total: 10, loss: 1 / iteration,
    metrics: {}, at: new Date(1e12 + seq * 1000).toISOString()});
  for (let i = 1; i <= 8; i += 1) history.add(sample(10 + i, 1, i));
  for (let i = 6; i <= 9; i += 1) history.add(sample(30 + i, 2, i));  // resumed from a checkpoint at 5
  history.add(sample(5, 1, 1));  // an older page arriving late
  const submitted = {seq: 7, event_type: 'JobSubmitted', event: {job_id: 'j1', kind: 'train', workload: 'noop',
    submitted_at: '2026-01-01T00:00:00Z'}};
  let job = evolve(null, submitted);
  job = evolve(job, {seq: 8, event_type: 'JobStarted', event: {attempt: 1, worker_id: 'w', started_at: 'x'}});
  const stopping = evolve(job, {seq: 9, event_type: 'JobStopRequested', event: {}});
  return {
    ticks: ticks(0, 97, 5), drawn: dx.length, spike: dy.includes(99), ordered: dx.every((x, i) => !i || x >= dx[i - 1]),
    noNulls: dy.every((y) => y != null), bins: bins([1, 2, 2, 3, 9]).map((b) => b.count),
    iterations: history.list().map((s) => s.iteration), attempts: history.list().map((s) => s.attempt),
    statuses: [job.status, stopping.status, evolve(stopping, {...submitted, seq: 3}).status],
  };
}"""


async def test_client_helpers_fold_downsample_and_keep_the_newest_report(stack: Stack, browser) -> None:
    page = await open_page(browser, f"{stack.url}/")
    result = await page.evaluate(CLIENT_CHECKS)
    assert result["ticks"] == [0, 20, 40, 60, 80]
    assert result["drawn"] <= 4 * 500 and result["spike"] and result["ordered"] and result["noNulls"]
    assert sum(result["bins"]) == 5
    assert result["iterations"] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert result["attempts"] == [1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert result["statuses"] == ["running", "stopping", "stopping"]
    await page.context.close()


async def test_a_dropped_connection_says_so_reconnects_and_misses_nothing(stack: Stack, browser) -> None:
    relay = Relay(int(stack.url.rsplit(":", 1)[1]))
    await relay.start()
    url = f"http://127.0.0.1:{relay.port}"
    job_id = new_id()
    now = utcnow()
    await stack.log.append("job", job_id, [
        ev.JobSubmitted(job_id=job_id, kind="train", workload="sleep", max_iterations=100, submitted_at=now),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id="w1", assigned_at=now)], 0)
    await stack.log.append("job", job_id, [ev.JobStarted(job_id=job_id, attempt=1, worker_id="w1", started_at=now)])

    async def progress(iterations: range) -> None:
        for i in iterations:
            await publish(stack, JobProgress(job_id=job_id, attempt=1, worker_id="w1", iteration=i, total=100,
                                             loss=1 / i, at=utcnow()), "progress", job_id)

    await progress(range(1, 11))
    try:
        page = await sign_in(browser, url, stack.tokens["admin"], **DESKTOP)
        frames: list[tuple[str, dict[str, Any]]] = []
        page.on("websocket", lambda ws: (ws.on("framesent", lambda f: frames.append(("sent", json.loads(f)))),
                                         ws.on("framereceived", lambda f: frames.append(("got", json.loads(f))))))
        timeline_reads: list[str] = []
        page.on("request", lambda r: timeline_reads.append(r.url) if r.url.endswith(f"/{job_id}/events") else None)
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        await page.goto(f"{url}/#/job/{job_id}")
        await page.reload()  # a fresh socket, watched from its first frame
        await expect(page.locator(".progress-line")).to_contain_text("10 of 100")
        await expect(page.locator("#conn")).to_have_text("Live")
        # A function: the CSP forbids eval. Installing the worker caches the whole shell, which takes a
        # while when the machine is busy with the rest of the suite.
        try:
            await page.wait_for_function("() => !!navigator.serviceWorker.controller", timeout=90_000)
        except Exception:
            state = await page.evaluate("""async () => {
                const r = await navigator.serviceWorker.getRegistration();
                return r ? [r.installing && r.installing.state, r.waiting && r.waiting.state,
                            r.active && r.active.state] : 'no registration'; }""")
            raise AssertionError(f"service worker never took control: {state}; errors {page.errors}; "
                                 f"console {console}") from None
        reads_before = len(timeline_reads)

        # The network goes away: the page says so plainly, and everything that happens meanwhile is kept.
        relay.cut()
        await expect(page.locator("#conn")).to_contain_text("Connection lost")
        await progress(range(11, 31))
        await stack.log.append("job", job_id, [
            ev.JobRequeued(job_id=job_id, attempt=2, reason="worker_lost", requeued_at=utcnow()),
            ev.JobAssigned(job_id=job_id, attempt=2, worker_id="w2", assigned_at=utcnow())])

        # Back online: it reconnects by itself and resumes from the sequences it had seen.
        relay.restore()
        await page.evaluate("window.dispatchEvent(new Event('online'))")
        await expect(page.locator("#conn")).to_have_text("Live")
        await expect(page.locator(".progress-line")).to_contain_text("30 of 100")
        await expect(page.locator(".timeline")).to_contain_text("Requeued because its worker was lost")
        await expect(page.locator(".page-head .badge")).to_have_text("assigned")
        subscribes = [m for way, m in frames if way == "sent" and m.get("type") == "subscribe" and "resume" in m]
        assert subscribes and set(subscribes[-1]["resume"]) == {"events", "telemetry"}
        replies = [m for way, m in frames if way == "got" and m.get("type") == "subscribed"]
        assert replies[-1]["replayed"] >= 22  # 20 progress samples and 2 events, each once
        assert len(timeline_reads) == reads_before, "the resume filled the gap; nothing was read again over REST"

        # Offline, the service worker still opens the app, which says it is reconnecting rather than failing.
        relay.cut()
        await page.reload()
        await expect(page.locator(".brand")).to_be_visible()
        await expect(page.locator("#conn")).to_contain_text("Connection lost")
        relay.restore()
        await page.evaluate("window.dispatchEvent(new Event('online'))")
        await expect(page.locator(".progress-line")).to_contain_text("30 of 100")
        assert page.errors == []
        await page.context.close()
    finally:
        await relay.stop()
