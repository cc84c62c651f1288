"""One running platform per data dir: an OS file lock in it, released by the OS when its holders die.

`stoker up` takes `<data dir>/stoker.lock` (flock on POSIX, msvcrt on Windows) and writes into it who holds
it: its pid, the gateway and NATS URLs. The processes it starts inherit the locked file, so the lock is
held until the last of them has gone, even when the supervisor itself was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

LOCK_FILE = "stoker.lock"
_WINDOWS_LOCK_AT = 1 << 20  # msvcrt locks are mandatory: lock a byte past the content so it stays readable


class AlreadyRunning(RuntimeError):
    """Another platform holds the data dir."""

    def __init__(self, holder: dict[str, Any]) -> None:
        self.holder = holder
        super().__init__(already_running_message(holder, pid_alive(holder.get("pid"))))


def already_running_message(holder: dict[str, Any], alive: bool) -> str:
    """What a second `stoker up` says about the first."""
    pid = holder.get("pid", "?")
    gateway = holder.get("gateway") or "no gateway"
    if alive:
        return f"stoker is already running here (pid {pid}, gateway {gateway})"
    return (f"stoker is still stopping here (pid {pid} is gone, the processes it started are finishing); "
            "try again in a moment, or see `stoker status`")


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (ValueError, TypeError, psutil.Error):
        return False


def _try_lock(fd: int, shared: bool = False) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def read_holder(data_dir: Path) -> dict[str, Any]:
    """What the lock file says (empty when it says nothing readable)."""
    try:
        value = json.loads((Path(data_dir) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def holder(data_dir: Path) -> dict[str, Any] | None:
    """Who holds the data dir now (what they wrote in the lock file), or None when nobody does."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY if sys.platform != "win32" else os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if _try_lock(fd, shared=True):
            _unlock(fd)
            return None
    finally:
        os.close(fd)
    return read_holder(data_dir)


@dataclass
class DataDirLock:
    """The lock `stoker up` holds on its data dir for as long as it (and what it started) runs."""

    data_dir: Path
    fd: int = -1

    @property
    def path(self) -> Path:
        """The lock file."""
        return Path(self.data_dir) / LOCK_FILE

    def acquire(self, info: dict[str, Any], wait_s: float = 1.0) -> DataDirLock:
        """Take the lock and write `info` into it; raise AlreadyRunning when someone else holds it.

        Waits up to `wait_s` first: `stoker status` takes the lock for an instant to see whether it is free.
        """
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                raise AlreadyRunning(read_holder(self.data_dir))
            time.sleep(0.05)
        self.fd = fd
        self.update(info)
        return self

    def update(self, info: dict[str, Any]) -> None:
        """Rewrite what the lock file says about its holder."""
        data = json.dumps(info).encode()
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, data)

    def release(self) -> None:
        """Close our handle: the lock goes once no process holds the file (a straggler keeps it, rightly)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
