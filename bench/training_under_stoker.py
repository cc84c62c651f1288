"""The under-stoker half of bench/training.py: the same 2048 run submitted through a real `stoker up`."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128  # boards stepped per update by the 2048 workload's default
WARMUP = 100  # iterations left out of every rate: replay warm-up and first allocations


async def _run_job(url: str, iterations: int, credentials: Path | None = None,
                   timeout: float = 900) -> list[tuple[int, float]]:
    """Submit one 2048 training job, wait for its end, return (iteration, time) from its progress samples."""
    from contracts.commands import JobAccepted, SubmitJob
    from contracts.events import JobCompleted, JobFailed, JobStopped
    from contracts.subjects import Topology
    from contracts.telemetry import JobProgress
    from eventstore.connect import connect
    from eventstore.log import JetStreamLog
    from eventstore.micro import call
    from eventstore.telemetry import assigned_workers, job_samples

    nc = await connect(url, "bench-training", credentials=credentials)
    try:
        topology = Topology()
        log = JetStreamLog(nc, topology)
        reply = await _submit_when_ready(nc, topology, SubmitJob(workload="2048", max_iterations=iterations),
                                         call, JobAccepted)
        async with asyncio.timeout(timeout):
            async for stored in log.subscribe(1, filter_subject=topology.events("job", reply.job_id)):
                if isinstance(stored.event, JobFailed | JobStopped):
                    raise RuntimeError(f"the bench job ended {stored.type}: {stored.event}")
                if isinstance(stored.event, JobCompleted):
                    break
        events, _version = await log.load("job", reply.job_id)
        samples = await job_samples(nc, topology, "progress", reply.job_id, assigned_workers(events), JobProgress)
        return [(s.iteration, s.at.timestamp()) for _seq, s in samples]
    finally:
        await nc.close()


async def _submit_when_ready(nc: Any, topology: Any, command: Any, call: Any, reply_type: Any) -> Any:
    from contracts.errors import Unavailable

    for _ in range(120):
        try:
            return await call(nc, topology, command, reply_type)
        except Unavailable:
            await asyncio.sleep(0.5)  # the scheduler is still starting
    raise RuntimeError("the scheduler never answered")


def _start_platform(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from eventstore.server import free_port, read_record

    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update(STOKER_DATA_DIR=str(data_dir), STOKER_GATEWAY_PORT=str(free_port()))
    # BENCH_STOKER_X=v sets STOKER_X=v for the platform only (e.g. BENCH_STOKER_TRAINER_PROGRESS_INTERVAL_S=1)
    env.update({k[6:]: v for k, v in os.environ.items() if k.startswith("BENCH_STOKER_")})
    log = (data_dir / "up.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ops", "up", "--port", str(free_port())], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        record = read_record(data_dir)
        if record:
            return process, record["url"]
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"stoker up did not start; see {data_dir / 'up.log'}")


class CpuWatch:
    """Samples the platform's process tree while a job runs: the job process's threads and CPU, and the rest's.

    The job process is the zygote's child that used the most CPU in the window; "others" is every other
    process under `stoker up` (nats-server, the services, the agent, spare children).
    """

    def __init__(self, root_pid: int, interval: float = 0.25) -> None:
        self.root_pid, self.interval = root_pid, interval
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.threads: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuWatch:
        self._sample()
        self.began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.monotonic() - self.began

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        import psutil

        try:
            procs = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    parent = proc.ppid()
                    times = proc.cpu_times()
                    role = "job" if _is_zygote(parent) else " ".join(proc.cmdline()[1:3])
                    self.threads[proc.pid] = max(self.threads.get(proc.pid, 0), proc.num_threads())
            except psutil.Error:
                continue
            entry = (role, times.user + times.system)
            self.first.setdefault(proc.pid, entry)
            self.last[proc.pid] = entry

    def figures(self) -> dict[str, Any]:
        """The job process's CPU seconds and peak threads, and the other processes' CPU seconds by name."""
        used = {pid: (role, self.last[pid][1] - self.first[pid][1]) for pid, (role, _t) in self.last.items()}
        jobs = [(cpu, pid) for pid, (role, cpu) in used.items() if role == "job"]
        job_cpu, job_pid = max(jobs) if jobs else (0.0, 0)
        others: dict[str, float] = {}
        for pid, (role, cpu) in used.items():
            if pid != job_pid:
                others[role] = others.get(role, 0.0) + cpu
        other_cpu = sum(others.values())
        return {"job_cpu_s": round(job_cpu, 3), "job_threads": self.threads.get(job_pid, 0),
                "others_cpu_s": round(other_cpu, 3),
                # the share of the machine's CPU time the rest of stoker took while the job ran: the steal,
                # less noisy than the rates (which swing with whatever else the host runs)
                "others_cpu_share": round(other_cpu / (self.seconds * (os.cpu_count() or 1)), 4),
                "others_cpu_s_by_process": {k: round(v, 3) for k, v in sorted(others.items()) if v >= 0.01}}


def _is_zygote(pid: int) -> bool:
    import psutil

    try:
        return "services.trainer.zygote" in psutil.Process(pid).cmdline()
    except psutil.Error:
        return False


def bare_run(standalone_rate: Callable[[str, int, int], float], device: str,
             iterations: int) -> tuple[float, dict[str, Any]]:
    """The bare rate, with this process's CPU seconds and peak threads over the run."""
    import psutil

    me = psutil.Process()
    peak = [me.num_threads()]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            peak[0] = max(peak[0], me.num_threads() - 1)  # less this watcher

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    before = time.process_time()
    rate = standalone_rate(device, iterations, WARMUP)
    cpu = time.process_time() - before
    done.set()
    watcher.join()
    return rate, {"bare_cpu_s": round(cpu, 3), "bare_threads": peak[0]}


def round_ratio_figures(ratios: list[float]) -> dict[str, float]:
    """Median and mean of the rounds' stoker/standalone ratios, and the mean's standard error (rounds >= 2):
    single rounds swing by several percent on a shared machine, so an overhead of 1 % shows only in the mean
    of many, and only when it is larger than twice its standard error."""
    figures = {"median_round_ratio": round(statistics.median(ratios), 3),
               "mean_round_ratio": round(statistics.fmean(ratios), 4)}
    if len(ratios) >= 2:
        figures["mean_round_ratio_stderr"] = round(statistics.stdev(ratios) / len(ratios) ** 0.5, 4)
    return figures


def compare(device: str, iterations: int, rounds: int, standalone_rate: Callable[[str, int, int], float],
            emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Alternate standalone and under-stoker runs; return rates, env steps and the overhead ratio.

    A short job runs under stoker first, as the standalone side warms up before it is timed: the worker's
    first job of a workload module has it import that module into a warm zygote for the next ones (about
    a second of CPU, once per worker), which is not what a job under stoker costs.
    """
    from bench.training import steady_rate

    bare: list[float] = []
    managed: list[float] = []
    shares: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        process, url = _start_platform(Path(tmp))
        credentials = Path(tmp) / "credentials" / "admin.nk"
        try:
            asyncio.run(_run_job(url, 20, credentials))
            time.sleep(2)  # the warm zygote and its spare are made after the first job's start
            for round_no in range(rounds):
                # Which side goes first alternates, so a drift in the machine's speed hits both alike.
                if round_no % 2 == 0:
                    rate, bare_cpu = bare_run(standalone_rate, device, iterations)
                with CpuWatch(process.pid) as watch:
                    samples = asyncio.run(_run_job(url, iterations, credentials))
                if round_no % 2 == 1:
                    rate, bare_cpu = bare_run(standalone_rate, device, iterations)
                bare.append(rate)
                managed.append(steady_rate(samples, WARMUP))
                figures = watch.figures()
                shares.append(figures["others_cpu_share"])
                emit({"measure": "round", "device": device, "standalone_updates_per_s": round(bare[-1], 2),
                      "stoker_updates_per_s": round(managed[-1], 2), "ratio": round(managed[-1] / bare[-1], 3),
                      **bare_cpu, **figures})
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    standalone, stoker = sum(bare) / len(bare), sum(managed) / len(managed)
    return {"standalone_updates_per_s": round(standalone, 2), "stoker_updates_per_s": round(stoker, 2),
            "standalone_env_steps_per_s": round(standalone * BATCH), "stoker_env_steps_per_s": round(stoker * BATCH),
            "overhead": round(1 - stoker / standalone, 4),
            **round_ratio_figures([m / b for m, b in zip(managed, bare, strict=True)]),
            "others_cpu_share_mean": round(statistics.fmean(shares), 4)}
