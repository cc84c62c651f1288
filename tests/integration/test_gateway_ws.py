"""The live socket on a real gateway: topics, resume after a dropped connection, slow clients, auth."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.uri import parse_uri

from contracts import events as ev
from contracts.base import utcnow
from contracts.commands import RegisterWorker, WorkerAccepted
from eventstore.micro import call
from gateway.live import EVENTS, TELEMETRY
from gateway.replay import stream_name
from gateway.tokens import load_registry, revoke_token
from tests.integration.gateway_support import gateway_stack, publish_progress, run_job


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway with a short ping and a small per-client queue."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, ws_queue_size=8, ws_ping_s=0.2,
                             ws_auth_timeout_s=0.5) as running:
        yield running


async def open_socket(stack, role: str = "viewer", **options: Any) -> ClientConnection:
    """Connect and authenticate with the first message; returns after the welcome."""
    conn = await connect(stack.ws_url, **options)
    await conn.send(json.dumps({"type": "auth", "token": stack.tokens[role]}))
    welcome = json.loads(await conn.recv())
    assert welcome["type"] == "welcome" and welcome["role"] == role
    return conn


async def next_of(conn: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next message of one type (pings and others skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await conn.recv())
            if message["type"] == kind:
                return message


async def collect_until(conn: ClientConnection, last: dict[str, int], into: list[dict[str, Any]]) -> None:
    """Read stream messages into `into` until each stream's `last` sequence has arrived."""
    seen = {EVENTS: 0, TELEMETRY: 0}
    async with asyncio.timeout(20):
        while any(seen[s] < last[s] for s in last):
            message = json.loads(await conn.recv())
            if "stream" in message:
                into.append(message)
                seen[message["stream"]] = message["seq"]


async def expected_for(stack, job_id: str) -> dict[str, list[int]]:
    """The sequences of everything topic job:<id> covers, per stream, as the streams hold them."""
    topology, log = stack.topology, stack.log
    subjects = {EVENTS: [topology.events("job", job_id)],
                TELEMETRY: [topology.job_telemetry("progress", job_id), topology.job_telemetry("episode", job_id)]}
    out = {}
    for stream, names in subjects.items():
        seqs: set[int] = set()
        for subject in names:
            name = stream_name(log, stream)
            seqs |= {m.metadata.sequence.stream async for m in log.read_raw(1, filter_subject=subject, stream=name)}
        out[stream] = sorted(seqs)
    return out


async def two_more_events(stack, job_id: str, iteration: int) -> None:
    """Two more events of a running job: its worker reports two checkpoints, the scheduler appends them."""
    worker, assignment = await stack.worker(), stack.assignments[job_id]
    for reached in (iteration, iteration + 1):
        assert (await worker.report_checkpointed(assignment, reached)).accepted


async def test_resume_after_a_dropped_connection_misses_nothing_and_repeats_nothing(stack) -> None:
    job = await run_job(stack, finish=False)
    first = await open_socket(stack)
    await first.send(json.dumps({"type": "subscribe", "topics": [f"job:{job}"]}))
    cursors = (await next_of(first, "subscribed"))["positions"]
    await two_more_events(stack, job, 10)
    await publish_progress(stack.nc, stack.topology, job, range(1, 4))
    before: list[dict[str, Any]] = []
    last = {s: (await expected_for(stack, job))[s][-1] for s in (EVENTS, TELEMETRY)}
    await collect_until(first, last, before)
    for message in before:
        cursors[message["stream"]] = max(cursors[message["stream"]], message["seq"])
    await first.close()

    # While nobody listens: events and progress of the job, and noise from another job.
    await two_more_events(stack, job, 20)
    other = await run_job(stack, finish=False)
    await publish_progress(stack.nc, stack.topology, job, range(4, 8))
    await publish_progress(stack.nc, stack.topology, other, range(1, 3))

    second = await open_socket(stack)
    await second.send(json.dumps({"type": "subscribe", "topics": [f"job:{job}"], "resume": cursors}))
    # Live traffic races the replay on purpose.
    await asyncio.gather(two_more_events(stack, job, 30),
                         publish_progress(stack.nc, stack.topology, job, range(8, 12)))
    expected = await expected_for(stack, job)
    after: list[dict[str, Any]] = []
    await collect_until(second, {s: expected[s][-1] for s in expected}, after)
    await second.close()

    for stream in (EVENTS, TELEMETRY):
        got = [m["seq"] for m in after if m["stream"] == stream]
        assert got == [s for s in expected[stream] if s > cursors[stream]], stream
        everything = [m["seq"] for m in before + after if m["stream"] == stream]
        assert len(everything) == len(set(everything)), f"{stream}: delivered twice"
    assert all(m["id"] == job for m in after)


async def test_topics_fan_out_and_unsubscribe(stack) -> None:
    await stack.worker()  # registered before anyone listens: the first event below is the job's
    conn = await open_socket(stack)
    await conn.send(json.dumps({"type": "subscribe", "topics": ["jobs", "workers"]}))
    await next_of(conn, "subscribed")
    job = await run_job(stack, finish=False)
    event = await next_of(conn, "event")
    assert event["aggregate"] == "job" and event["id"] == job and event["event_type"] == "JobSubmitted"
    assert event["event"]["kind"] == "train"
    await conn.send(json.dumps({"type": "unsubscribe", "topics": ["jobs"]}))
    await next_of(conn, "unsubscribed")
    await run_job(stack, finish=False)
    caps = ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=1024)
    await call(stack.nc, stack.topology, RegisterWorker(worker_id="w9", capabilities=caps), WorkerAccepted)
    event = await next_of(conn, "event")
    assert event["aggregate"] == "worker" and event["id"] == "w9"
    assert (await next_of(conn, "ping"))["type"] == "ping"
    await conn.close()


async def test_bad_messages_get_errors_not_a_crash(stack) -> None:
    conn = await open_socket(stack)
    for bad in ("not json", json.dumps({"type": "subscribe", "topics": ["nope"]}),
                json.dumps({"type": "subscribe", "topics": "job:x"}), json.dumps({"type": "launch"})):
        await conn.send(bad)
        error = await next_of(conn, "error")
        assert error["code"] == 400 and error["detail"]
    await conn.send(json.dumps({"type": "subscribe", "topics": ["jobs"]}))
    await next_of(conn, "subscribed")
    await conn.send(json.dumps({"type": "subscribe", "topics": ["workers"], "resume": {"events": 1}}))
    assert "first subscribe" in (await next_of(conn, "error"))["detail"]
    await conn.close()


async def close_code(conn: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(20):
            while True:
                await conn.recv()
    return conn.close_code


@pytest.mark.parametrize(("first", "code"), [(None, 4408), ("not json", 4401),
                                             (json.dumps({"type": "auth", "token": "stk_wrong"}), 4401)])
async def test_socket_without_a_good_token_is_closed(stack, first, code) -> None:
    conn = await connect(stack.ws_url)
    if first is not None:
        await conn.send(first)
    assert await close_code(conn) == code


async def test_header_token_and_role_check(stack) -> None:
    headers = {"Authorization": f"Bearer {stack.tokens['viewer']}"}
    async with connect(stack.ws_url, additional_headers=headers) as conn:
        assert (await next_of(conn, "welcome"))["role"] == "viewer"
        await conn.send(json.dumps({"type": "subscribe", "topics": ["events"]}))
        assert await close_code(conn) == 4403
    admin = await open_socket(stack, "admin")
    await admin.send(json.dumps({"type": "subscribe", "topics": ["events"]}))
    assert (await next_of(admin, "subscribed"))["topics"] == ["events"]
    await admin.close()


async def test_revoking_a_token_closes_its_sockets(stack) -> None:
    conn = await open_socket(stack, "operator")
    async with stack.client("admin") as client:
        tokens = (await client.get("/api/v1/tokens")).json()["items"]
        operator = next(t for t in tokens if t["role"] == "operator")
        assert (await client.post(f"/api/v1/tokens/{operator['token_id']}/revoke")).status_code == 200
    assert await close_code(conn) == 4401


@pytest_asyncio.fixture
async def slow_pings(nats_server, nc, topology, tmp_path):
    """A gateway whose ping tick (which also looks at tokens) is far beyond any wait in these tests."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, ws_ping_s=60) as running:
        yield running


async def test_a_socket_closes_when_its_token_expires(slow_pings) -> None:
    stack = slow_pings
    async with stack.client("admin") as client:
        created = (await client.post("/api/v1/tokens", json={"role": "viewer", "expires_in_s": 2})).json()
    conn = await connect(stack.ws_url)
    await conn.send(json.dumps({"type": "auth", "token": created["token"]}))
    assert (await next_of(conn, "welcome"))["ping_s"] == 60
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):  # the expiry, not the 60 s ping tick, closes it
            while True:
                assert json.loads(await conn.recv())["type"] != "ping"
    assert conn.close_code == 4401


async def test_a_revocation_seen_in_the_log_closes_the_socket(slow_pings) -> None:
    stack = slow_pings
    conn = await open_socket(stack, "operator")
    operator = (await load_registry(stack.log)).authenticate(stack.tokens["operator"])
    await revoke_token(stack.log, operator.token_id)  # straight to the log, as `stoker token revoke` does
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await conn.recv()
    assert conn.close_code == 4401


class StalledClient:
    """A socket client that stops reading when told to: sans-I/O protocol over a tiny receive buffer."""

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        self.address = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await self.loop.sock_sendall(self.sock, chunk)

    async def _read_until(self, done: Any) -> None:
        async with asyncio.timeout(20):
            while not done():
                data = await self.loop.sock_recv(self.sock, 65536)
                if not data:
                    self.protocol.receive_eof()
                    return
                self.protocol.receive_data(data)
                await self._flush()
                for frame in self.protocol.events_received():
                    self.last_text = getattr(frame, "data", b"")

    async def open(self, token: str, topic: str) -> None:
        """Handshake, authenticate, subscribe; returns once subscribed (then it reads no more)."""
        await self.loop.sock_connect(self.sock, self.address)
        self.last_text = b""
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        await self._read_until(lambda: self.protocol.state is State.OPEN)
        for message in ({"type": "auth", "token": token}, {"type": "subscribe", "topics": [topic]}):
            self.protocol.send_text(json.dumps(message).encode())
        await self._flush()
        await self._read_until(lambda: b'"subscribed"' in self.last_text)

    async def close_code(self) -> int | None:
        """Read everything until the server's close frame; its code."""
        await self._read_until(lambda: self.protocol.close_code is not None)
        self.sock.close()
        return self.protocol.close_code


async def test_a_slow_client_is_closed_and_never_slows_the_others(stack) -> None:
    job = await run_job(stack, finish=False)  # on w1: the feed shows only its workers' samples
    slow = StalledClient(stack.ws_url)
    await slow.open(stack.tokens["viewer"], f"job:{job}")
    fast = await open_socket(stack)
    await fast.send(json.dumps({"type": "subscribe", "topics": [f"job:{job}"]}))
    await next_of(fast, "subscribed")
    js = stack.nc.jetstream()
    payload = {"job_id": job, "attempt": 1, "worker_id": "w1", "iteration": 0, "at": utcnow().isoformat(),
               "metrics": {f"m{i}": float(i) for i in range(1000)}}
    last = 0
    for i in range(1, 251):
        ack = await js.publish(stack.topology.job_telemetry("progress", job, "w1"),
                               json.dumps({**payload, "iteration": i}).encode())
        last = ack.seq
    got: list[dict[str, Any]] = []
    await collect_until(fast, {TELEMETRY: last}, got)
    assert [m["data"]["iteration"] for m in got] == list(range(1, 251))
    assert await slow.close_code() == 4009
    await fast.close()

