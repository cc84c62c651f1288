"""The supervisor behind `stoker up`: each service its own OS process, restarted with backoff."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from eventstore.observability import get_logger

log = get_logger(component="supervisor")


@dataclass
class ProcessSpec:
    """One supervised process; lower `stop_rank` stops first (workers before the control plane)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_rank: int = 5
    grace: float = 30.0


def python_module(name: str, module: str, env: dict[str, str], stop_rank: int = 5,
                  grace: float = 30.0) -> ProcessSpec:
    """A spec running `python -m module` with this interpreter."""
    return ProcessSpec(name, [sys.executable, "-m", module], env, stop_rank, grace)


def next_backoff(previous: float, uptime: float, base: float = 0.5, cap: float = 30.0) -> float:
    """Delay before restarting a crashed process: doubles while it keeps crashing, resets after a calm minute."""
    if uptime >= 60.0:
        return base
    return min(cap, max(base, previous * 2))


class Supervised:
    """A running process, its restart count and backoff."""

    def __init__(self, spec: ProcessSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.backoff = 0.0
        self.stopping = False

    async def start(self) -> None:
        """Launch the process, its output appended to its log file."""
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv, env={**os.environ, **self.spec.env}, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out, start_new_session=True)
        self.started_at = time.monotonic()

    async def watch(self) -> None:
        """Restart the process whenever it exits on its own, with backoff; return once stopping."""
        while not self.stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self.stopping:
                return
            uptime = time.monotonic() - self.started_at
            self.backoff = next_backoff(self.backoff, uptime)
            self.restarts += 1
            log.warning("service exited, restarting", service=self.spec.name, exit_code=code,
                        restart=self.restarts, delay_s=self.backoff, log=str(self.log_path))
            await asyncio.sleep(self.backoff)
            if not self.stopping:
                await self.start()

    async def stop(self) -> None:
        """SIGTERM, wait its grace period, then SIGKILL."""
        self.stopping = True
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), self.spec.grace)
        except TimeoutError:
            log.warning("service did not stop in time, killing", service=self.spec.name)
            self.process.kill()
            await self.process.wait()


class Supervisor:
    """Starts every process, keeps them running, and stops them in rank order."""

    def __init__(self, specs: list[ProcessSpec], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children = [Supervised(spec, log_dir) for spec in specs]
        self._watchers: list[asyncio.Task] = []

    async def start(self) -> None:
        """Launch everything and begin watching."""
        for child in self.children:
            await child.start()
            self._watchers.append(asyncio.create_task(child.watch()))

    async def stop(self) -> None:
        """Stop processes rank by rank (each rank in parallel)."""
        for rank in sorted({c.spec.stop_rank for c in self.children}):
            await asyncio.gather(*(c.stop() for c in self.children if c.spec.stop_rank == rank))
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def pids(self) -> dict[str, int | None]:
        """Current pid of each process."""
        return {c.spec.name: c.process.pid if c.process else None for c in self.children}
