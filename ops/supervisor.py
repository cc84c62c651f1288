"""The supervisor behind `stoker up`: each service its own OS process, restarted with backoff.

Children run in sessions of their own (a terminal's Ctrl-C reaches the supervisor only, which stops them in
order) and inherit the supervisor's lifeline (see `eventstore.lifeline`): if the supervisor dies, they stop
on their own. Every process is reaped and its exit recorded; a stop says how each one ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventstore import lifeline
from eventstore.observability import get_logger

log = get_logger(component="supervisor")
LOCK_FD_ENV = "STOKER_LOCK_FD"


@dataclass
class ProcessSpec:
    """One supervised process; lower `stop_rank` stops first (workers before the control plane).

    `infrastructure` marks what the others need in order to stop cleanly (NATS): it stops last, and when a
    stop begins while it is down it is restarted at once instead of after its backoff.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_rank: int = 5
    grace: float = 30.0
    infrastructure: bool = False


def python_module(name: str, module: str, env: dict[str, str], stop_rank: int = 5,
                  grace: float = 30.0) -> ProcessSpec:
    """A spec running `python -m module` with this interpreter."""
    return ProcessSpec(name, [sys.executable, "-m", module], env, stop_rank, grace)


def next_backoff(previous: float, uptime: float, base: float = 0.5, cap: float = 30.0) -> float:
    """Delay before restarting a crashed process: doubles while it keeps crashing, resets after a calm minute."""
    if uptime >= 60.0:
        return base
    return min(cap, max(base, previous * 2))


def describe_exit(code: int | None) -> str:
    """An exit status in words: `exit 1`, `killed by SIGKILL`."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def lifeline_waits(specs: list[ProcessSpec], margin: float = 10.0) -> dict[str, float]:
    """How long each process, once its supervisor is gone, waits for those that stop before it.

    As long as a normal stop would take to get to its rank (each earlier rank's longest grace), plus a margin;
    0 for the first rank.
    """
    longest: dict[int, float] = {}
    for spec in specs:
        longest[spec.stop_rank] = max(longest.get(spec.stop_rank, 0.0), spec.grace)
    waits = {}
    for spec in specs:
        earlier = [grace for rank, grace in longest.items() if rank < spec.stop_rank]
        waits[spec.name] = sum(earlier) + margin if earlier else 0.0
    return waits


@dataclass
class Launch:
    """What every child gets besides its spec: inherited fds, the lifeline's read end, the state file."""

    fds: tuple[int, ...] = ()
    lifeline_fd: int | None = None
    state_file: Path | None = None
    lock_fd: int | None = None  # the data dir's lock: held by every child (and handed on to nats-server)

    @property
    def inherited(self) -> tuple[int, ...]:
        """Every fd a child inherits."""
        own = tuple(fd for fd in (self.lifeline_fd, self.lock_fd) if fd is not None)
        return tuple(dict.fromkeys(self.fds + own))

    def env(self, spec: ProcessSpec, wait_s: float) -> dict[str, str]:
        """The lifeline (and lock) variables for this child."""
        env = {LOCK_FD_ENV: str(self.lock_fd)} if self.lock_fd is not None else {}
        if self.lifeline_fd is not None:
            env |= lifeline.child_env(self.lifeline_fd, self.state_file, spec.stop_rank, wait_s)
        return env


class Supervised:
    """A running process, its restart count and backoff, and how it ended when stopped."""

    def __init__(self, spec: ProcessSpec, log_dir: Path, launch: Launch | None = None,
                 on_change: Callable[[], None] | None = None, lifeline_wait_s: float = 0.0) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.launch = launch or Launch()
        self.env = self.launch.env(spec, lifeline_wait_s)
        self.on_change = on_change or (lambda: None)
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.started_wall = 0.0
        self.restarts = 0
        self.backoff = 0.0
        self.stopping = False
        self.last_exit: int | None = None
        self.outcome: str | None = None  # after stop(): "clean", "exit 3", "killed after 60 s", …
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        """Whether its process is alive now."""
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Launch the process, its output appended to its log file."""
        async with self._lock:
            if self.stopping:
                return
            with self.log_path.open("ab") as out:
                self.process = await asyncio.create_subprocess_exec(
                    *self.spec.argv, env={**os.environ, **self.env, **self.spec.env},
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                    pass_fds=self.launch.inherited)
            self.started_at, self.started_wall = time.monotonic(), time.time()
        self.on_change()

    async def watch(self, restart: Callable[[Supervised, int], bool]) -> None:
        """Reap the process each time it exits; restart it with backoff while `restart` says so."""
        while not self.stopping:
            assert self.process is not None
            code = await self.process.wait()
            self.last_exit = code
            self.on_change()
            if self.stopping or not restart(self, code):
                return
            uptime = time.monotonic() - self.started_at
            self.backoff = next_backoff(self.backoff, uptime)
            self.restarts += 1
            log.warning("service exited, restarting", service=self.spec.name, exit=describe_exit(code),
                        restart=self.restarts, delay_s=self.backoff, log=str(self.log_path))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.backoff)
            self._wake.clear()
            try:
                await self.start()
            except OSError as exc:  # could not even launch it: count it as a crash and try again later
                log.error("service could not be started", service=self.spec.name, error=str(exc))
                self.started_at = time.monotonic()
                self.process = _Failed()
                continue
            if self.stopping:
                return
            log.info("service restarted", service=self.spec.name, pid=self.process.pid, restart=self.restarts)

    def restart_now(self) -> None:
        """Cut a pending backoff short."""
        self._wake.set()

    async def stop(self, grace: float | None = None) -> None:
        """SIGTERM, wait its grace period, then SIGKILL; record how it ended in `outcome`."""
        if self.outcome is not None:
            return  # stopped already
        grace = self.spec.grace if grace is None else min(grace, self.spec.grace)
        async with self._lock:
            self.stopping = True
        self._wake.set()
        if not self.running:
            self.outcome = "not running" if self.process is None else f"was down ({describe_exit(self.last_exit)})"
            self.on_change()
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), grace)
            # Dying of the SIGTERM we sent is a clean stop too (uvicorn re-raises it once it has shut down).
            self.outcome = "clean" if code in (0, -signal.SIGTERM) else describe_exit(code)
        except TimeoutError:
            log.warning("service did not stop in time, killing", service=self.spec.name, grace_s=grace)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
            self.outcome = f"killed after {grace:g} s"
        self.last_exit = self.process.returncode
        self.on_change()

    def log_tail(self, lines: int = 12) -> list[str]:
        """The last lines of its log."""
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def snapshot(self) -> dict[str, Any]:
        """Its state for `stoker status`."""
        if self.outcome is not None:
            state = "stopped"
        elif self.running:
            state = "running"
        else:
            state = "restarting" if self.process is not None else "not started"
        return {"name": self.spec.name, "pid": self.process.pid if self.process and self.running else None,
                "stop_rank": self.spec.stop_rank, "state": state, "restarts": self.restarts,
                "started_at": self.started_wall or None,
                "last_exit": describe_exit(self.last_exit) if self.last_exit is not None else None,
                "log": str(self.log_path)}


class _Failed:
    """Stands in for a process that could not be launched: it has already exited."""

    pid = None
    returncode = 127

    async def wait(self) -> int:
        return 127


class StartupFailed(RuntimeError):
    """A process exited before the platform was up."""

    def __init__(self, child: Supervised, code: int) -> None:
        self.child, self.code = child, code
        super().__init__(f"{child.spec.name} exited during startup ({describe_exit(code)})")


class Supervisor:
    """Starts every process, keeps them running, and stops them in rank order.

    Until `mark_up()` a process that exits is not restarted: it fails the startup (`startup_failure()`).
    """

    def __init__(self, specs: list[ProcessSpec], log_dir: Path, launch: Launch | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        waits = lifeline_waits(specs)
        self.children = [Supervised(spec, log_dir, launch, self._changed, waits[spec.name]) for spec in specs]
        self._on_change = on_change or (lambda: None)
        self._watchers: list[asyncio.Task] = []
        self.up = False
        self._startup_failure: asyncio.Future[StartupFailed] | None = None

    def _changed(self) -> None:
        with contextlib.suppress(Exception):  # a state file that cannot be written must not stop a restart
            self._on_change()

    def child(self, name: str) -> Supervised:
        """The process called `name`."""
        return next(c for c in self.children if c.spec.name == name)

    async def start(self, which: Callable[[ProcessSpec], bool] | None = None) -> None:
        """Launch the processes `which` selects (all by default) that are not started yet, and watch them."""
        for child in self.children:
            if child.process is None and (which is None or which(child.spec)):
                await child.start()
                self._watchers.append(asyncio.create_task(child.watch(self._restart)))

    def startup_failure(self) -> asyncio.Future[StartupFailed]:
        """Done with the first process to exit before `mark_up()`."""
        if self._startup_failure is None:
            self._startup_failure = asyncio.get_running_loop().create_future()
        return self._startup_failure

    def _restart(self, child: Supervised, code: int) -> bool:
        if self.up:
            return True
        if not self.startup_failure().done():
            self.startup_failure().set_result(StartupFailed(child, code))
        return False

    def mark_up(self) -> None:
        """From now on a process that exits is restarted."""
        self.up = True

    def select(self, which: Callable[[ProcessSpec], bool] | None) -> list[Supervised]:
        """The processes `which` selects (all by default)."""
        return [c for c in self.children if which is None or which(c.spec)]

    def restart_infrastructure(self) -> None:
        """Bring what others need to stop cleanly back now, rather than after its backoff."""
        for child in self.children:
            if child.spec.infrastructure and not child.stopping:
                child.restart_now()

    async def stop(self, which: Callable[[ProcessSpec], bool] | None = None, grace: float | None = None,
                   ordered: bool = True) -> None:
        """Stop the selected processes (all by default) rank by rank, each rank in parallel.

        `grace` caps each one's grace period; `ordered=False` stops them all at once (when the order buys
        nothing, e.g. without NATS).
        """
        chosen = self.select(which)
        ranks = sorted({c.spec.stop_rank for c in chosen}) if ordered else [None]
        for rank in ranks:
            await asyncio.gather(*(c.stop(grace) for c in chosen if rank is None or c.spec.stop_rank == rank))
        if all(c.stopping for c in self.children):
            for watcher in self._watchers:
                watcher.cancel()
            await asyncio.gather(*self._watchers, return_exceptions=True)

    def pids(self) -> dict[str, int | None]:
        """Current pid of each process."""
        return {c.spec.name: c.process.pid if c.process else None for c in self.children}

    def snapshot(self) -> list[dict[str, Any]]:
        """Each process's state, for `stoker status`."""
        return [c.snapshot() for c in self.children]

    def outcomes(self, which: Iterable[Supervised] | None = None) -> dict[str, str]:
        """How each stopped process ended."""
        return {c.spec.name: c.outcome or "not stopped" for c in (self.children if which is None else which)}
