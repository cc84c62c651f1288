"""A service manager's end of sd_notify for tests: a bound AF_UNIX datagram socket that records who said what."""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass


@dataclass
class Notice:
    """One datagram: its fields and the pid that sent it (SO_PASSCRED)."""

    fields: dict[str, str]
    pid: int


class NotifyListener:
    """Binds an abstract socket (`@stoker-test-…`), or a path when given one; `env` is what a unit would pass."""

    def __init__(self, path: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if path is None:
            self.name = f"@stoker-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + self.name[1:].encode())
        else:
            self.name = path
            self.sock.bind(path)
        self.notices: list[Notice] = []

    @property
    def env(self) -> dict[str, str]:
        """NOTIFY_SOCKET for a child."""
        return {"NOTIFY_SOCKET": self.name}

    def receive(self, timeout: float) -> Notice | None:
        """The next datagram within `timeout` s, or None."""
        self.sock.settimeout(max(0.01, timeout))
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        notice = Notice(fields, pid)
        self.notices.append(notice)
        return notice

    def wait_for(self, key: str, value: str | None = None, timeout: float = 60.0) -> Notice:
        """The first notice, seen already or arriving within `timeout` s, with `key` (= `value`)."""
        def wanted(n: Notice) -> bool:
            return key in n.fields and (value is None or n.fields[key] == value)

        seen = next((n for n in self.notices if wanted(n)), None)
        deadline = time.monotonic() + timeout
        while seen is None and time.monotonic() < deadline:
            notice = self.receive(deadline - time.monotonic())
            if notice is not None and wanted(notice):
                seen = notice
        if seen is None:
            raise AssertionError(f"no {key}{'=' + value if value else ''} within {timeout:g} s; got "
                                 f"{[n.fields for n in self.notices]}")
        return seen

    def drain(self, quiet_s: float = 0.2) -> None:
        """Read what is pending until nothing comes for `quiet_s`."""
        while self.receive(quiet_s) is not None:
            pass

    def close(self) -> None:
        """Unbind (and remove a path socket)."""
        self.sock.close()
        if not self.name.startswith("@"):
            os.unlink(self.name)
