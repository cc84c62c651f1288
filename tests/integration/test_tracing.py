"""One trace from an HTTP request to the job's code, across the real processes of the platform.

Gateway, scheduler, discovery, projector and a worker run as processes (as `stoker up` runs them),
each with `STOKER_TRACING=file` writing its spans as JSON lines to one shared file; the job's own
process gets the trace context as $TRACEPARENT. The test reads every span back and follows the
parent links from the HTTP request down to the job's first progress report.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from contracts.base import utcnow, uuid7
from contracts.events import JobCompleted, JobSubmitted
from eventstore.observability import attached, context_of, trace_id_of
from eventstore.server import free_port
from gateway.tokens import issue_token
from ops.cli import main as stoker_main
from services.scheduler.committer import Committer
from services.trainer.sdk import workload
from tests.integration import test_trainer_platform as shared
from tests.integration.test_trainer_platform import Platform, pytestmark, wait_event  # noqa: F401

# The authenticated nats-server of the platform tests (their fixtures, shared by name): the gateway, the
# services and the worker each connect with their own credential.
secured, nats_server, nc = shared.secured, shared.nats_server, shared.nc

WORKLOAD = "tests.integration.test_tracing:report_traceparent"


@workload
def report_traceparent(ctx: Any) -> dict[str, Any]:
    """A workload: one progress report, and the trace context its process was given as the result."""
    ctx.report(iteration=1, loss=0.5)
    return {"traceparent": os.environ.get("TRACEPARENT", "")}


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Every span the processes wrote so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one(spans: list[dict[str, Any]], what: str, test: Any = None, **match: Any) -> dict[str, Any]:
    """The single span whose fields match (and that passes `test`, when given)."""
    found = [s for s in spans if all(s.get(k) == v for k, v in match.items()) and (test is None or test(s))]
    assert len(found) == 1, f"{what}: {len(found)} spans match {match}\n" + "\n".join(
        f"{s['service']} {s['kind']} {s['name']} {s['trace_id']} {s['span_id']} <- {s['parent_id']}" for s in spans)
    return found[0]


async def wait_for_span(path: Path, name: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The spans written once one named `name` is among them (a process writes a span when it ends)."""
    for _ in range(int(timeout / 0.1)):
        spans = read_spans(path)
        if any(s["name"] == name for s in spans):
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {name} span after {timeout}s; spans: {[s['name'] for s in read_spans(path)]}")


class TracedPlatform(Platform):
    """Every process writes its spans to one file."""

    def __init__(self, *args: Any, spans_file: Path) -> None:
        super().__init__(*args)
        self.spans_file = spans_file

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(STOKER_TRACING="file", STOKER_TRACE_FILE=str(self.spans_file), **extra)


async def gateway_up(url: str, proc: Any, timeout: float = 60.0) -> None:
    """Until the gateway answers HTTP (any status)."""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(int(timeout / 0.2)):
            assert proc.poll() is None, "the gateway process ended"
            try:
                await client.get(f"{url}/api/v1/health")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise AssertionError("the gateway never answered")


async def test_one_trace_from_the_http_request_to_the_first_progress_report(
        nats_server, secured, event_log, topology, tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    platform = TracedPlatform(nats_server, topology, tmp_path, secured.credentials, spans_file=spans_file)
    _event, token = await issue_token(event_log, "operator", "tracing test")
    port = free_port()
    try:
        for name in ("scheduler", "discovery", "projector"):
            platform.start(name, f"services.{name}")
        await platform.worker("trace-w1")
        gateway = platform.start("gateway", "gateway", STOKER_GATEWAY_PORT=str(port))
        url = f"http://127.0.0.1:{port}"
        await gateway_up(url, gateway)

        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=20) as client:
            for _ in range(100):  # the scheduler may still be taking its lease
                response = await client.post("/api/v1/training/start",
                                             json={"workload": WORKLOAD, "max_iterations": 1})
                if response.status_code != 503:
                    break
                await asyncio.sleep(0.2)
            assert response.status_code == 202, response.text
            job_id = response.json()["training_id"]
            done = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobCompleted))
            spans = await wait_for_span(spans_file, "stoker.job progress")

            # The chain, each span the parent of the next, all in one trace.
            http = one(spans, "the HTTP request", lambda s: s["name"].startswith("POST /api/v1/training/start"),
                       kind="SERVER", service="stoker-gateway")
            trace_id = http["trace_id"]
            mine = [s for s in spans if s["trace_id"] == trace_id]
            call = one(mine, "the command call", lambda s: s["name"].startswith("stoker.call "),
                       kind="CLIENT", service="stoker-gateway")
            command = one(mine, "the submit command", lambda s: s["name"].endswith(".cmd.scheduler.submit"),
                          kind="SERVER", service="stoker-scheduler")
            append = one(mine, "the append of JobSubmitted",
                         lambda s: "JobSubmitted" in s["attributes"]["stoker.event_types"],
                         name="stoker.append", service="stoker-scheduler")
            dispatch = one(mine, "the assignment's dispatch", name="stoker.dispatch assign")
            handling = one(mine, "the worker's handling", name="stoker.assignment", service="stoker-trainer")
            start = one(mine, "the job process's start", name="stoker.job start", service="stoker-trainer")
            progress = one(mine, "the first progress report", name="stoker.job progress")
            assert call["parent_id"] == http["span_id"]
            assert command["parent_id"] == call["span_id"]
            assert append["parent_id"] == command["span_id"]
            assert dispatch["parent_id"] == command["span_id"]
            assert handling["parent_id"] == dispatch["span_id"]
            assert start["parent_id"] == handling["span_id"]
            assert progress["parent_id"] == start["span_id"]
            assert start["attributes"]["stoker.job_id"] == job_id == dispatch["attributes"]["stoker.job_id"]

            # The job's own code was handed the trace, as the child of its start.
            child_parent = done.event.result["traceparent"]
            assert trace_id_of(child_parent) == trace_id and start["span_id"] in child_parent

            # The job's events carry the trace: the submission records it, each event's headers continue it.
            events, _version = await event_log.load("job", job_id)
            assert isinstance(events[0].event, JobSubmitted)
            assert trace_id_of(events[0].event.traceparent) == trace_id
            assert all(trace_id_of(e.headers.get("traceparent", "")) == trace_id for e in events[:2])

            # And both the API and `stoker job` show it.
            for _ in range(100):
                view = (await client.get(f"/api/v1/jobs/{job_id}")).json()
                if view["status"] == "completed":
                    break
                await asyncio.sleep(0.1)
            assert view["trace_id"] == trace_id
        cli = await asyncio.to_thread(
            CliRunner().invoke, stoker_main,
            ["--data-dir", str(tmp_path / "data"), "--nats", nats_server.url,
             "--credentials", str(secured.credential("admin")), "job", job_id],
            env={"STOKER_PREFIX": topology.prefix})
        assert cli.exit_code == 0, cli.output
        assert cli.output.splitlines()[0] == f"trace {trace_id}"
    finally:
        platform.stop()


async def test_a_group_commit_keeps_each_decision_s_own_trace(event_log):
    """Two commands' decisions appended as one batch: each job's events continue its own command's trace."""
    committer = Committer(event_log, batch_min_events=2)
    parents = {"jobA": "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-00000000000000a1-01",
               "jobB": "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-00000000000000b1-01"}
    futures = []
    for job_id, parent in parents.items():
        with attached(context_of(parent)):  # as inside that command's span
            event = JobSubmitted(job_id=job_id, kind="train", workload="noop", submitted_at=utcnow())
            futures.append(committer.enqueue(job_id, [event], [uuid7()], 0))
    writer = asyncio.create_task(committer.run())  # started after both are queued: one batch
    try:
        await asyncio.wait_for(asyncio.gather(*futures), 10)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    for job_id, parent in parents.items():
        events, _version = await event_log.load("job", job_id)
        assert trace_id_of(events[0].headers["traceparent"]) == trace_id_of(parent), job_id
