"""Dispatch benchmark: submit → job code running, and no-op jobs per second, end to end.

Starts its own nats-server, the real scheduler and discovery, and two workers with two slots each (`--slots`; all
as separate processes, as `stoker up` runs them), then:

- idle: 50 no-op jobs one after another on an idle system;
- load: 1,000 no-op jobs submitted at once, until every one is completed.

"start" is the moment the job's code runs: the time.time() the no-op workload's first ctx.report()
records in the job process (JobProgress.at); "submit" is time.time() just before the SubmitJob request.
Prints one JSON line. Run from the repository root: `python bench/dispatch.py [--jobs N] [--auth]`; with
`--auth` the server has the platform's users and permissions (docs/security.md) and every process connects
with its role's credential, as under `stoker up`; with `--tls` NATS speaks only TLS under a CA made for the
run (eventstore.pki) and every process pins it, as `stoker up --listen 0.0.0.0` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.codec import decode_message  # noqa: E402
from contracts.commands import JobAccepted, SubmitJob  # noqa: E402
from contracts.errors import Unavailable  # noqa: E402
from contracts.events import JobCompleted, JobFailed  # noqa: E402
from contracts.subjects import Topology  # noqa: E402
from contracts.telemetry import JobProgress, WorkerHeartbeat  # noqa: E402
from eventstore.connect import connect  # noqa: E402
from eventstore.credentials import CredentialStore  # noqa: E402
from eventstore.log import JetStreamLog  # noqa: E402
from eventstore.micro import call  # noqa: E402
from eventstore.pki import LOOPBACK_NAMES, ensure_server_tls  # noqa: E402
from eventstore.server import NatsServer, ServerSpec, free_port  # noqa: E402

PREFIX = "bench"
WORKERS = ("bench-w1", "bench-w2")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Watch:
    """Who started when (first progress sample) and which jobs ended, as the platform says it."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, str] = {}
        self.heartbeats: set[str] = set()
        self.changed = asyncio.Event()

    async def on_progress(self, msg) -> None:
        sample = decode_message(JobProgress, msg.data)
        self.started.setdefault(sample.job_id, sample.at.timestamp())

    async def on_heartbeat(self, msg) -> None:
        self.heartbeats.add(decode_message(WorkerHeartbeat, msg.data).worker_id)
        self.changed.set()

    async def follow_events(self, log: JetStreamLog, from_seq: int) -> None:
        async for stored in log.subscribe(from_seq, filter_subject=log.topology.events("job", "*")):
            event = stored.event
            if isinstance(event, JobCompleted) or (isinstance(event, JobFailed) and not event.will_retry):
                self.ended[event.job_id] = type(event).__name__
                self.changed.set()

    async def until(self, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("benchmark did not finish in time")
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass


def start_processes(url: str, data: Path, credentials: CredentialStore | None,
                    ca: Path | None = None, slots: int = 2) -> list[subprocess.Popen]:
    """Scheduler, discovery and two workers, each its own process (with its credential and the CA, when given)."""
    env = {**os.environ, "STOKER_NATS_URL": url, "STOKER_PREFIX": PREFIX, "STOKER_DATA_DIR": str(data),
           "STOKER_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"), "STOKER_LOG_FORMAT": "json",
           "PYTHONPATH": str(ROOT), **({"STOKER_NATS_CA": str(ca)} if ca else {})}
    logs = (data / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    specs = [("scheduler", "services.scheduler", {}), ("discovery", "services.discovery", {})]
    specs += [(w, "services.trainer", {"STOKER_TRAINER_WORKER_ID": w, "STOKER_TRAINER_SLOTS": str(slots),
                                       "STOKER_TRAINER_DETECT_GPUS": "false"}) for w in WORKERS]
    if credentials is not None:
        for name, _module, extra in specs:
            path = credentials.worker_path(name) if name in WORKERS else credentials.role_path(name)
            extra["STOKER_NATS_CREDENTIALS"] = str(path)
    procs = []
    for name, module, extra in specs:
        with (logs / f"{name}.log").open("ab") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", module], env={**env, **extra}, cwd=ROOT,
                                          stdout=out, stderr=out, start_new_session=True))
    return procs


def cpu_seconds(procs: dict[str, int], own: bool = False) -> dict[str, float]:
    """CPU seconds used so far by each named process and everything below it (reaped job processes too);
    with `own`, by each named process alone."""
    out = {}
    for name, pid in procs.items():
        total = 0.0
        try:
            root = psutil.Process(pid)
            # This process's children are the others: count only its own time.
            below = [] if pid == os.getpid() or own else root.children(recursive=True)
            for proc in [root, *below]:
                times = proc.cpu_times()
                total += times.user + times.system
                if pid != os.getpid() and not own:
                    total += times.children_user + times.children_system
        except psutil.Error:
            pass
        out[name] = total
    return out


def server_messages(server: NatsServer) -> dict[str, int]:
    """Messages and bytes nats-server has taken in and sent out so far (its /varz counters)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.spec.http_port}/varz", timeout=5) as reply:
        varz = json.loads(reply.read())
    return {k: int(varz.get(k, 0)) for k in ("in_msgs", "out_msgs", "in_bytes", "out_bytes")}


def probing(workers: dict[str, int]) -> list[str]:
    """The workers still running their start-up probe (services.trainer.describe: a throwaway interpreter that
    imports every workload's module, torch for 2048, about a CPU second): its CPU is no job's."""
    out = []
    for name, pid in workers.items():
        try:
            children = psutil.Process(pid).children()
            if any("-c" in child.cmdline() for child in children):
                out.append(name)
        except psutil.Error:
            pass
    return out


async def until_probed(workers: dict[str, int], timeout: float = 180.0) -> None:
    """Until no worker runs its start-up probe any more (bounded)."""
    deadline = time.monotonic() + timeout
    while probing(workers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers still probing their workloads: {probing(workers)}")
        await asyncio.sleep(0.2)


async def submit(nc, topology: Topology, submitted: dict[str, float]) -> str:
    """One no-op SubmitJob, retried while the scheduler is not leading yet."""
    while True:
        at = time.time()
        try:
            reply = await call(nc, topology, SubmitJob(workload="noop"), JobAccepted, timeout=30)
        except Unavailable:
            await asyncio.sleep(0.1)
            continue
        submitted[reply.job_id] = at
        return reply.job_id


async def idle_run(nc, topology: Topology, watch: Watch, count: int) -> list[float]:
    """Jobs one after another: submit, wait until it completed, next."""
    submitted: dict[str, float] = {}
    for _ in range(count):
        job_id = await submit(nc, topology, submitted)
        await watch.until(lambda job_id=job_id: job_id in watch.ended and job_id in watch.started, 60)
    return [(watch.started[j] - submitted[j]) * 1000 for j in submitted]


async def load_run(nc, topology: Topology, watch: Watch, count: int, concurrency: int) -> tuple[float, list[float]]:
    """`count` jobs submitted as fast as the scheduler takes them; wall time until the last completed."""
    submitted: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await submit(nc, topology, submitted)

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    # A set difference in C: this runs on every event, and a Python loop over every job made it O(N²).
    await watch.until(lambda: not submitted.keys() - watch.ended.keys(), 300)
    elapsed = time.perf_counter() - began
    failed = [j for j in submitted if watch.ended[j] != "JobCompleted"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0]}")
    latencies = [(watch.started[j] - submitted[j]) * 1000 for j in submitted if j in watch.started]
    return elapsed, latencies


async def measure(server: NatsServer, procs: list[subprocess.Popen], jobs: int, idle: int,
                  concurrency: int, admin: Path | None, ca: Path | None = None, slots: int = 2) -> dict:
    """Both phases against a running platform; the figures."""
    nc = await connect(server.url, "bench", credentials=admin, ca_file=str(ca) if ca else None)
    topology = Topology(PREFIX)
    log = JetStreamLog(nc, topology)
    watch = Watch()
    await nc.subscribe(topology.job_telemetry("progress"), cb=watch.on_progress)
    await nc.subscribe(topology.telemetry("heartbeat", "*"), cb=watch.on_heartbeat)
    follower = asyncio.create_task(watch.follow_events(log, 1))
    await watch.until(lambda: watch.heartbeats >= set(WORKERS), 120)
    await idle_run(nc, topology, watch, 20)  # warm-up: leases, zygotes, consumers
    idle_ms = await idle_run(nc, topology, watch, idle)
    named = {"nats": server.process.pid, "scheduler": procs[0].pid, "discovery": procs[1].pid,
             **{w: p.pid for w, p in zip(WORKERS, procs[2:], strict=True)}, "bench": os.getpid()}
    workers = {w: named[w] for w in WORKERS}
    await until_probed(workers)  # a one-off start-up cost that would otherwise land in the load's CPU figures
    before, before_own = cpu_seconds(named), cpu_seconds(workers, own=True)
    messages_before = await asyncio.to_thread(server_messages, server)
    elapsed, load_ms = await load_run(nc, topology, watch, jobs, concurrency)
    after, after_own = cpu_seconds(named), cpu_seconds(workers, own=True)
    messages_after = await asyncio.to_thread(server_messages, server)
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await nc.close()
    return {"bench": "dispatch", "jobs": jobs, "workers": len(WORKERS), "slots_per_worker": slots,
            "jobs_per_s": round(jobs / elapsed, 1),
            "submit_to_start_ms": {f"p{q}": round(percentile(load_ms, q), 2) for q in (50, 95, 99)},
            "idle_submit_to_start_ms_p50": round(statistics.median(idle_ms), 2),
            "idle_submit_to_start_ms_p95": round(percentile(idle_ms, 95), 2),
            "start": "first ctx.report() of the noop workload, time.time() in the job process",
            "load_cpu_ms_per_job": {k: round((after[k] - before[k]) * 1000 / jobs, 2) for k in named},
            "load_cpu_ms_per_job_total": round(sum(after[k] - before[k] for k in named) * 1000 / jobs, 2),
            # the worker agents alone, without their zygotes and job processes (in load_cpu_ms_per_job)
            "worker_agent_cpu_ms_per_job": {k: round((after_own[k] - before_own[k]) * 1000 / jobs, 2)
                                            for k in workers},
            # what crossed nats-server per job (the bench's own event follower and progress subscription too)
            "nats_per_job": {k: round((messages_after[k] - messages_before[k]) / jobs, 1) for k in messages_after},
            "auth": admin is not None, "tls": ca is not None, "cpus": os.cpu_count()}


def bench_credentials(base: Path) -> CredentialStore:
    """The platform's users for the benchmark's prefix, as `stoker up` makes them."""
    credentials = CredentialStore(base)
    credentials.ensure_control_plane()
    for worker in WORKERS:
        credentials.ensure_worker(worker)
    credentials.write_authorization(Topology(PREFIX))
    return credentials


async def main(jobs: int, idle: int, concurrency: int, auth: bool, tls: bool = False, slots: int = 2) -> dict:
    """Start NATS and the platform, measure, stop everything."""
    base = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="stoker-bench-"))
    credentials = bench_credentials(base) if auth else None
    admin = credentials.role_path("admin") if credentials else None
    server_tls = ensure_server_tls(base, LOOPBACK_NAMES) if tls else None
    ca = server_tls.ca_file if server_tls else None
    server = NatsServer(ServerSpec(store_dir=base / "nats" / "jetstream", port=free_port(), http_port=free_port(),
                                   auth_file=credentials.authorization_path if credentials else None,
                                   tls=server_tls))
    await server.start()
    procs: list[subprocess.Popen] = []
    try:
        setup = await connect(server.url, "bench-setup", credentials=admin, ca_file=str(ca) if ca else None)
        await JetStreamLog(setup, Topology(PREFIX)).ensure_streams()
        await setup.close()
        procs = start_processes(server.url, base, credentials, ca, slots)
        return await measure(server, procs, jobs, idle, concurrency, admin, ca, slots)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=200, help="submits in flight at once")
    parser.add_argument("--auth", action="store_true", help="with the platform's users and permissions")
    parser.add_argument("--tls", action="store_true", help="NATS only over TLS, the CA pinned by every process")
    parser.add_argument("--slots", type=int, default=2, help="job slots per worker (the target is set at 2)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.jobs, args.idle, args.concurrency, args.auth, args.tls, args.slots))))
