"""The service manager's readiness protocol (systemd's sd_notify), written here in a few lines.

Under a `Type=notify` unit systemd passes `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`)
and, with `WatchdogSec=`, `WATCHDOG_USEC` and `WATCHDOG_PID`. The process sends `READY=1` once it is up,
`WATCHDOG=1` at least every `WATCHDOG_USEC`, `STATUS=…` for `systemctl status` and `STOPPING=1` when it
stops. Anywhere else (a terminal, launchd, Windows) every call does nothing. It lives in the event store
because both `stoker up` (ops) and the worker agent (a service) report readiness.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping, MutableMapping

SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV = "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"
NOTIFY_VARIABLES = (SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)


def message(**fields: str | int) -> bytes:
    """The datagram for these fields, one `KEY=value` a line (`message(READY=1, STATUS="up")`)."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"{key}: a notification value is one line")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


def socket_address(name: str) -> str | bytes:
    """NOTIFY_SOCKET as an AF_UNIX address: `@name` is Linux's abstract namespace (a leading NUL byte)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """How often to ping the watchdog (half its timeout), or None when it is not ours to ping."""
    try:
        usec = int(env.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    owner = env.get(WATCHDOG_PID_ENV)
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 2_000_000


def strip(env: MutableMapping[str, str]) -> None:
    """Remove the protocol's variables, so that child processes do not speak for the main one."""
    for name in NOTIFY_VARIABLES:
        env.pop(name, None)


class Notifier:
    """Talks to the service manager when there is one; otherwise every method is a no-op."""

    def __init__(self, socket_name: str | None, watchdog_s: float | None = None) -> None:
        self.socket_name = socket_name or None
        self.watchdog_s = watchdog_s if self.socket_name else None

    @classmethod
    def from_environment(cls, unset: bool = False) -> Notifier:
        """The notifier the environment describes; `unset` removes the variables (children do not inherit them)."""
        notifier = cls(os.environ.get(SOCKET_ENV), watchdog_interval(os.environ, os.getpid()))
        if unset:
            strip(os.environ)
        return notifier

    @property
    def active(self) -> bool:
        """Whether a service manager listens."""
        return self.socket_name is not None

    def send(self, **fields: str | int) -> bool:
        """Send one notification; False when there is nobody to tell or it could not be sent."""
        if self.socket_name is None:
            return False
        data = message(**fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, socket_address(self.socket_name))
            return True
        except OSError:
            return False  # the manager went away (or never was): readiness is advice, not a reason to fail

    def ready(self, status: str = "") -> bool:
        """READY=1, with a status line."""
        return self.send(READY=1, STATUS=status) if status else self.send(READY=1)

    def status(self, text: str) -> bool:
        """A status line for `systemctl status`."""
        return self.send(STATUS=text)

    def stopping(self, status: str = "stopping") -> bool:
        """STOPPING=1."""
        return self.send(STOPPING=1, STATUS=status)

    def extend_start(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start times out (while waiting for something that is late)."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def watchdog(self) -> bool:
        """WATCHDOG=1."""
        return self.send(WATCHDOG=1)

    async def keep_watchdog(self) -> None:
        """Ping the watchdog at half its timeout until cancelled: a stuck event loop stops the pings."""
        if self.watchdog_s is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_s)

    def start_watchdog(self) -> asyncio.Task | None:
        """`keep_watchdog` as a task (None when there is no watchdog)."""
        return asyncio.create_task(self.keep_watchdog()) if self.watchdog_s is not None else None

