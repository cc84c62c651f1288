"""Gateway benchmark: GET /api/v1/jobs against a bare Litestar route, and WebSocket fan-out latency.

Starts its own nats-server, seeds jobs into the log and the SQLite read model, then runs the gateway and
a bare Litestar app (one route returning a prebuilt page of the same jobs) in one server process, and
drives them from this process:

- jobs: requests per second of `GET /api/v1/jobs` (50 jobs a page, bearer token checked, read model
  queried) and of the bare route, same client, same concurrency, same run; the ratio of the two;
- fanout: N clients (default 500) subscribed to one job on /ws; progress samples are published to
  telemetry; latency is JobProgress.at (taken just before publishing) → the client has the message.

Prints one JSON line per part. Run from the repository root: `python bench/gateway.py [--clients N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts import events as ev  # noqa: E402
from contracts.base import new_id, utcnow  # noqa: E402
from contracts.codec import encode  # noqa: E402
from contracts.subjects import Topology  # noqa: E402
from contracts.telemetry import JobProgress  # noqa: E402
from eventstore.connect import connect  # noqa: E402
from eventstore.log import JetStreamLog  # noqa: E402
from eventstore.projection import ProjectionRunner  # noqa: E402
from eventstore.readmodels import all_projections  # noqa: E402
from eventstore.readmodels.jobs import list_jobs  # noqa: E402
from eventstore.server import NatsServer, ServerSpec, free_port, port_is_free  # noqa: E402
from eventstore.stores.sqlite import SqliteStore  # noqa: E402
from gateway.schemas.jobs import JobPage  # noqa: E402
from gateway.tokens import issue_token  # noqa: E402
from gateway.views import job_view  # noqa: E402

PREFIX = "bench"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def serve(nats_url: str, data_dir: str, port: int, bare_port: int) -> None:
    """The server process: the gateway (page cache on, and off one port up) and the bare app, in one event loop."""
    import uvicorn
    from litestar import Litestar, get

    from eventstore.config import CommonSettings
    from gateway.__main__ import server_config
    from gateway.app import create_app
    from gateway.settings import GatewaySettings, Settings

    page = msgspec.json.decode((Path(data_dir) / "page.json").read_bytes(), type=JobPage)

    @get("/bare", sync_to_thread=False)
    def bare() -> JobPage:
        return page

    common = CommonSettings(data_dir=data_dir, nats_url=nats_url, prefix=PREFIX)
    cached = Settings(common=common, gateway=GatewaySettings(port=port))
    uncached = Settings(common=common, gateway=GatewaySettings(port=port + 1, job_page_cache=0))
    bare_settings = Settings(common=common, gateway=GatewaySettings(port=bare_port))
    apps = ((create_app(cached), cached), (create_app(uncached), uncached), (Litestar([bare]), bare_settings))
    run_servers([uvicorn.Server(server_config(app, config)) for app, config in apps])


def run_servers(servers: list) -> None:
    """Serve until SIGTERM; with STOKER_BENCH_PROFILE=<path>, write a cProfile of this process there."""
    async def together() -> None:
        def stop() -> None:
            for server in servers:
                server.should_exit = True

        for server in servers:
            server.capture_signals = contextlib.nullcontext  # one handler stops every server, and returns
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        await asyncio.gather(*(s.serve() for s in servers))

    profile_to = os.environ.get("STOKER_BENCH_PROFILE")
    if not profile_to:
        asyncio.run(together())
        return
    import cProfile

    with cProfile.Profile() as profile:
        asyncio.run(together())
    profile.dump_stats(profile_to)


async def seed(event_log: JetStreamLog, data_dir: Path, jobs: int) -> str:
    """Jobs in the log and the read model; the admin token; the bare route's page (the gateway's first page)."""
    now = utcnow()
    for _ in range(jobs):
        job_id = new_id()
        await event_log.append("job", job_id, [
            ev.JobSubmitted(job_id=job_id, kind="train", workload="2048", max_iterations=1000,
                            params={"lr": 0.001, "batch": 256}, submitted_at=now),
            ev.JobAssigned(job_id=job_id, attempt=1, worker_id="w1", assigned_at=now),
            ev.JobStarted(job_id=job_id, attempt=1, worker_id="w1", started_at=now)], 0)
    store = await SqliteStore.open(data_dir / "readmodels.sqlite3")
    await ProjectionRunner(event_log, store, all_projections()).catch_up()
    rows, cursor = await list_jobs(store, limit=50)
    (data_dir / "page.json").write_bytes(msgspec.json.encode(JobPage(items=[job_view(r) for r in rows],
                                                                     next_cursor=cursor)))
    await store.close()
    _event, token = await issue_token(event_log, "admin", "bench")
    return token


async def http_load(port: int, path: str, token: str, seconds: float, concurrency: int) -> float:
    """Requests per second over keep-alive connections; a minimal HTTP/1.1 client, so the server is what is measured."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    done = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            done += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def jobs_part(port: int, bare_port: int, token: str, seconds: float, concurrency: int, jobs: int) -> dict:
    """GET /api/v1/jobs (page cache on and off) vs the bare route, in alternating rounds so drift hits all alike."""
    targets = {"rps": (port, "/api/v1/jobs"), "uncached_rps": (port + 1, "/api/v1/jobs"), "bare_rps": (bare_port,
                                                                                                        "/bare")}
    results: dict[str, list[float]] = {name: [] for name in targets}
    for rounds, length in ((1, 1.0), (3, seconds / 3)):  # the first round warms up and is not counted
        for _ in range(rounds):
            for name, (target, path) in targets.items():
                rps = await http_load(target, path, token, length, concurrency)
                if rounds > 1:
                    results[name].append(rps)
    out = {name: round(sum(v) / len(v)) for name, v in results.items()}
    return {"bench": "gateway.jobs_list", **out, "ratio": round(out["rps"] / out["bare_rps"], 3),
            "uncached_ratio": round(out["uncached_rps"] / out["bare_rps"], 3), "target_ratio": 0.5,
            "concurrency": concurrency, "page": 50, "jobs": jobs}


async def open_client(url: str, token: str, topic: str):
    """A subscribed socket."""
    from websockets.asyncio.client import connect as ws_connect

    conn = await ws_connect(url, max_size=None, ping_interval=None)
    await conn.send(json.dumps({"type": "auth", "token": token}))
    await conn.send(json.dumps({"type": "subscribe", "topics": [topic]}))
    while json.loads(await conn.recv())["type"] != "subscribed":
        pass
    return conn


async def receive(conn, expected: int, arrivals: list[tuple[float, str]]) -> None:
    """Note the arrival time of each message first; parse later, so parsing never delays the next socket."""
    got = 0
    while got < expected:
        text = await conn.recv()
        arrivals.append((time.time(), text))
        got += '"type":"progress"' in text


def latencies_ms(arrivals: list[tuple[float, str]]) -> list[float]:
    """Arrival minus JobProgress.at, in milliseconds, of every progress message."""
    from datetime import datetime

    out = []
    for arrived, text in arrivals:
        message = json.loads(text)
        if message["type"] == "progress":
            out.append((arrived - datetime.fromisoformat(message["data"]["at"]).timestamp()) * 1000)
    return out


async def fanout_part(nc, port: int, token: str, clients: int, messages: int, rate: float) -> dict:
    """`clients` sockets on job:<id>; `messages` progress samples at `rate` per second; latency percentiles."""
    topology, job = Topology(PREFIX), new_id()
    url = f"ws://127.0.0.1:{port}/ws"
    conns = []
    for start in range(0, clients, 50):
        conns += await asyncio.gather(*(open_client(url, token, f"job:{job}") for _ in range(start, min(clients,
                                                                                                       start + 50))))
    arrivals: list[tuple[float, str]] = []
    readers = [asyncio.create_task(receive(c, messages, arrivals)) for c in conns]
    # The feed shows a job's samples only from a worker it was assigned to: say w1 runs it.
    await JetStreamLog(nc, topology).append("job", job, [
        ev.JobSubmitted(job_id=job, kind="train", workload="noop", max_iterations=messages, submitted_at=utcnow()),
        ev.JobAssigned(job_id=job, attempt=1, worker_id="w1", assigned_at=utcnow())], 0)
    js = nc.jetstream()
    for i in range(1, messages + 1):
        sample = JobProgress(job_id=job, attempt=1, worker_id="w1", iteration=i, total=messages, loss=1.0 / i,
                             at=utcnow())
        await js.publish(topology.job_telemetry("progress", job, "w1"), encode(sample))
        await asyncio.sleep(1 / rate)
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    for conn in conns:
        await conn.close()
    latencies = latencies_ms(arrivals)
    return {"bench": "gateway.ws_fanout", "clients": clients, "messages": messages, "rate_hz": rate,
            "deliveries": len(latencies), "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "max_ms": round(max(latencies), 2), "target_p99_ms": 50}


async def run(args: argparse.Namespace) -> None:
    """Start nats-server, seed, start the server process, measure, stop everything."""
    base = Path(tempfile.mkdtemp(prefix="stoker-bench-gw-"))
    spec = ServerSpec(store_dir=base / "nats", port=free_port(), http_port=free_port(), name="bench")
    nats = NatsServer(spec)
    nats.start_process()
    try:
        await nats.wait_healthy()
        await measure(nats.url, base, args)
    finally:
        nats.stop()


async def measure(nats_url: str, base: Path, args: argparse.Namespace) -> None:
    """Seed, start the server process, run both parts, stop the server process."""
    nc = await connect(nats_url, "bench")
    event_log = JetStreamLog(nc, Topology(PREFIX))
    await event_log.ensure_streams()
    token = await seed(event_log, base, args.jobs)
    port, bare_port = free_port(), free_port()
    while not port_is_free(port + 1):
        port = free_port()
    server = await start_server(nats_url, base, port, bare_port)
    try:
        jobs = await jobs_part(port, bare_port, token, args.seconds, args.concurrency, args.jobs)
        print(json.dumps(jobs), flush=True)
        rounds = []
        for _ in range(args.rounds):  # a shared machine's noise shows as spread between rounds
            rounds.append(await fanout_part(nc, port, token, args.clients, args.messages, args.rate))
            print(json.dumps(rounds[-1]), flush=True)
        if args.rounds > 1:
            p99s = sorted(r["p99_ms"] for r in rounds)
            print(json.dumps({"bench": "gateway.ws_fanout_rounds", "clients": args.clients, "rounds": args.rounds,
                              "p50_ms": [r["p50_ms"] for r in rounds], "p99_ms": [r["p99_ms"] for r in rounds],
                              "median_p99_ms": p99s[len(p99s) // 2],
                              "rounds_under_target": sum(1 for v in p99s if v < 50), "target_p99_ms": 50}),
                  flush=True)
    finally:
        server.terminate()
        server.wait(20)
        await nc.close()


async def start_server(nats_url: str, base: Path, port: int, bare_port: int) -> subprocess.Popen:
    """The server process, once both apps answer."""
    import httpx

    argv = [sys.executable, __file__, "serve", nats_url, str(base), str(port), str(bare_port)]
    process = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)  # noqa: ASYNC220
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(f"http://127.0.0.1:{bare_port}/bare")
                await client.get(f"http://127.0.0.1:{port}/api/v1/health")
                return process
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError("the gateway did not start")


def main() -> None:
    """`python bench/gateway.py [options]`, or `serve …` for the server process."""
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in the read model")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time of each HTTP target")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--clients", type=int, default=500, help="WebSocket clients on one job")
    parser.add_argument("--messages", type=int, default=100, help="progress samples published")
    parser.add_argument("--rate", type=float, default=10.0, help="progress samples per second")
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds, each with fresh clients")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
