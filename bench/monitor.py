"""What monitoring costs: the monitor's CPU time against the wall time, at the default interval.

Runs a real nats-server and `python -m services.monitor` (role alert: it samples this machine, publishes
to telemetry and decides the alert rules on its own samples) for `--seconds` (default 600, the
issue's 10 minutes), and reads the process's CPU time (user + system) from psutil after its start-up
and at the end. Target: under 1 % of one core. Baseline in the same run: the CPU time of the sampler
alone (PsutilSampler.sample in this process), projected to the same interval.

    python bench/monitor.py                       # 10 minutes at the default 10 s interval
    python bench/monitor.py --seconds 60          # a short run
    python bench/monitor.py --seconds 30 --interval 1   # more samples in less time

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.base import utcnow  # noqa: E402
from contracts.subjects import Topology  # noqa: E402
from contracts.telemetry import HostSample  # noqa: E402
from eventstore.connect import connect  # noqa: E402
from eventstore.log import JetStreamLog  # noqa: E402
from eventstore.server import NatsServer, ServerSpec, free_port  # noqa: E402
from eventstore.telemetry import sample_history  # noqa: E402
from services.monitor.sampler import PsutilSampler  # noqa: E402

PREFIX = "bench"
TARGET_SHARE = 0.01  # of one core


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of a process, its children included (there are none, normally)."""
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def sampler_alone(base: Path, rounds: int = 50) -> float:
    """CPU seconds one PsutilSampler.sample costs in this process (the baseline)."""
    sampler = PsutilSampler("bench-baseline", [base])
    try:
        sampler.sample(utcnow())
        me = psutil.Process()
        before = cpu_seconds(me)
        for _ in range(rounds):
            sampler.sample(utcnow())
        return (cpu_seconds(me) - before) / rounds
    finally:
        sampler.close()


async def wait_samples(url: str, count: int, timeout: float) -> int:
    """Wait until the monitor has published `count` samples; how many there are."""
    nc = await connect(url, "bench-monitor")
    topology = Topology(PREFIX)
    try:
        deadline = time.monotonic() + timeout
        while True:
            got = await sample_history(nc, topology, "host", "bench-host", HostSample)
            if len(got) >= count or time.monotonic() > deadline:
                return len(got)
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


def start_monitor(url: str, base: Path, interval: float) -> subprocess.Popen:
    """`python -m services.monitor` on the bench's server, as `stoker up` runs it (role alert)."""
    env = {**os.environ, "STOKER_NATS_URL": url, "STOKER_PREFIX": PREFIX, "STOKER_DATA_DIR": str(base),
           "STOKER_LOG_LEVEL": "warning", "STOKER_LOG_FORMAT": "json", "STOKER_MONITOR_HOST_ID": "bench-host",
           "STOKER_MONITOR_INTERVAL_S": f"{interval:g}", "PYTHONPATH": str(ROOT)}
    with (base / "monitor.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.monitor"], env=env, cwd=ROOT, stdout=out, stderr=out)


async def main(seconds: float, interval: float) -> dict:
    """Start NATS and a monitor, let it sample for `seconds`, and report its CPU share."""
    base = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="stoker-bench-monitor-"))
    server = NatsServer(ServerSpec(store_dir=base / "nats" / "jetstream", port=free_port(), http_port=free_port()))
    await server.start()
    proc = None
    try:
        setup = await connect(server.url, "bench-setup")
        await JetStreamLog(setup, Topology(PREFIX)).ensure_streams()
        await setup.close()
        proc = start_monitor(server.url, base, interval)
        watched = psutil.Process(proc.pid)
        if await wait_samples(server.url, 1, 60) < 1:
            raise RuntimeError(f"the monitor published nothing; see {base / 'monitor.log'}")
        cpu0, wall0 = cpu_seconds(watched), time.monotonic()  # start-up (imports, connect) left out
        await asyncio.sleep(seconds)
        cpu1, wall1 = cpu_seconds(watched), time.monotonic()
        published = await wait_samples(server.url, 0, 0)
        baseline = sampler_alone(base)
        share = (cpu1 - cpu0) / (wall1 - wall0)
        return {"bench": "monitor", "interval_s": interval, "wall_s": round(wall1 - wall0, 2),
                "samples": published, "monitor_cpu_s": round(cpu1 - cpu0, 4),
                "cpu_share_of_one_core": round(share, 6), "target_share": TARGET_SHARE,
                "share_vs_target": round(share / TARGET_SHARE, 4),
                "baseline_sampler_cpu_s_per_sample": round(baseline, 6),
                "baseline_share_at_interval": round(baseline / interval, 6),
                "monitor_vs_baseline": round(share / (baseline / interval), 3) if baseline > 0 else None,
                "cores": psutil.cpu_count()}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to measure (default 10 minutes)")
    parser.add_argument("--interval", type=float, default=10.0, help="the monitor's interval_s (default 10)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.seconds, args.interval))))
