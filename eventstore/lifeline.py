"""A supervised process stops on its own when its supervisor dies, even by SIGKILL.

The supervisor opens a pipe and never writes to it; each child inherits only the read end. When the
supervisor dies, the OS closes the write end and the child reads EOF: it then stops as on SIGTERM,
cleanly. This works on every POSIX system. On Linux each child also asks for SIGTERM when its parent
dies (PR_SET_PDEATHSIG) as a backstop, unless it first has to wait for others to stop (below). A child that
cannot watch a pipe (nats-server, a Go binary) is held by a small Python keeper that does (see
`eventstore.server.keep`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ENV_FD = "STOKER_LIFELINE_FD"
ENV_PARENT = "STOKER_LIFELINE_PARENT"
ENV_STATE = "STOKER_LIFELINE_STATE"  # the supervisor's state file: which processes run, with their stop rank
ENV_RANK = "STOKER_LIFELINE_RANK"
ENV_WAIT = "STOKER_LIFELINE_WAIT_S"
PR_SET_PDEATHSIG = 1
_watching = {"on": False}


def open_lifeline() -> tuple[int, int]:
    """(read end for the children, write end the supervisor keeps open and never writes)."""
    read_fd, write_fd = os.pipe()  # both non-inheritable: a child gets the read end through pass_fds only
    return read_fd, write_fd


def child_env(read_fd: int, state_file: Path | None = None, rank: int = 0, wait_s: float = 0.0) -> dict[str, str]:
    """What a child needs to find its lifeline.

    With a state file, a child of stop rank `rank` that loses its supervisor first waits (at most `wait_s`)
    until every process of a lower rank listed there has gone, then stops: the same order as a normal stop
    (the worker reports to the scheduler, NATS outlives them all).
    """
    env = {ENV_FD: str(read_fd), ENV_PARENT: str(os.getpid())}
    if state_file is not None and wait_s > 0:
        env |= {ENV_STATE: str(state_file), ENV_RANK: str(rank), ENV_WAIT: f"{wait_s:g}"}
    return env


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Linux: have the kernel send `sig` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def earlier_pids(state: dict, rank: int) -> list[int]:
    """Pids of the processes in a supervisor's state that stop before rank `rank`."""
    return [int(p["pid"]) for p in state.get("processes", [])
            if isinstance(p, dict) and p.get("pid") and int(p.get("stop_rank", rank)) < rank]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for_earlier(state_file: Path, rank: int, wait_s: float) -> None:
    """Wait until the processes that stop before us have gone (at most `wait_s`)."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    pids = earlier_pids(state if isinstance(state, dict) else {}, rank)
    deadline = time.monotonic() + wait_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)


def watch(on_lost: Callable[[], None] | None = None, env: dict[str, str] | None = None) -> bool:
    """If a supervisor started this process, call `on_lost` (default: SIGTERM to ourselves) once it dies.

    Returns whether there is a lifeline. The variables are removed from the environment so that processes
    this one starts do not take an fd number that means nothing to them for a lifeline. A process that
    has nobody to wait for also asks Linux for SIGTERM when its parent dies (a backstop to the pipe).
    """
    env = os.environ if env is None else env
    fd_text, parent_text = env.pop(ENV_FD, None), env.pop(ENV_PARENT, None)
    state_text, rank_text, wait_text = env.pop(ENV_STATE, None), env.pop(ENV_RANK, "0"), env.pop(ENV_WAIT, "0")
    if fd_text is None or _watching["on"]:
        return False
    try:
        fd, parent, rank, wait_s = int(fd_text), int(parent_text or 0), int(rank_text), float(wait_text)
        os.fstat(fd)
    except (ValueError, OSError):
        return False
    _watching["on"] = True
    lost = on_lost or _terminate_self
    if not state_text:
        set_parent_death_signal()

    def wait_for_eof() -> None:
        if not parent or os.getppid() == parent:  # else the supervisor died before we got here
            with contextlib.suppress(OSError):
                while os.read(fd, 1):
                    pass  # nobody writes; anything read is ignored
        if state_text:
            wait_for_earlier(Path(state_text), rank, wait_s)
        lost()

    threading.Thread(target=wait_for_eof, name="stoker-lifeline", daemon=True).start()
    return True
