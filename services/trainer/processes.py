"""Job processes as the agent sees them, and the zygote process that forks them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

from eventstore.observability import get_logger
from services.trainer import wire

log = get_logger(component="zygote")


class ZygoteGone(RuntimeError):
    """The zygote process ended; a new one is needed."""


def _quiet_future() -> asyncio.Future:
    # A zygote may end while nobody waits on its futures any more; that is not worth a warning.
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


class ChildProcess:
    """One job process: its pid, its socket, and its exit code as the zygote reports it."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 exit_code: asyncio.Future[int | None], origin: Zygote | None = None) -> None:
        self.pid, self.reader, self.writer, self.exit_code = pid, reader, writer, exit_code
        self.origin = origin  # the zygote that forked it
        self.kept = False  # it ran a job already and was kept for the next one (services.trainer.pool)

    @property
    def alive(self) -> bool:
        """Whether the process has not been seen to exit."""
        return not self.exit_code.done() and not self.reader.at_eof()

    def send(self, frame: wire.Frame) -> None:
        """Queue a frame for the child."""
        wire.write(self.writer, frame)

    async def frames(self) -> AsyncIterator[wire.Frame]:
        """Frames from the child until its end of the socket closes."""
        while (frame := await wire.read(self.reader)) is not None:
            yield frame

    def signal(self, sig: int, group: bool = False) -> None:
        """Send a signal to the child (or its whole process group); a gone process is fine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                try:
                    os.killpg(self.pid, sig)
                    return
                except ProcessLookupError:
                    pass  # not yet its own group leader: signal the process itself
            os.kill(self.pid, sig)

    def close(self) -> None:
        """Close the agent's end (a spare that gets EOF exits)."""
        self.writer.close()


class Zygote:
    """A `services.trainer.zygote` process with `modules` imported, forking children on request."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = modules
        self.process: asyncio.subprocess.Process | None = None
        self._commands: socket.socket | None = None
        self._ids = itertools.count(1)
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._ready: asyncio.Future[dict] | None = None
        self._listener: asyncio.Task | None = None
        self._events_writer: asyncio.StreamWriter | None = None
        self.gone = False

    async def start(self, timeout: float = 120.0) -> None:
        """Launch the zygote and wait until its imports are loaded."""
        ours, theirs = socket.socketpair()
        events_ours, events_theirs = socket.socketpair()
        self._ready = _quiet_future()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.trainer.zygote", str(theirs.fileno()), str(events_theirs.fileno()),
            *self.modules, pass_fds=(theirs.fileno(), events_theirs.fileno()), stdin=asyncio.subprocess.DEVNULL)
        theirs.close()
        events_theirs.close()
        self._commands = ours
        # Keep the writer: a collected StreamWriter closes the transport, and with it the zygote's link.
        reader, self._events_writer = await asyncio.open_connection(sock=events_ours)
        self._listener = asyncio.create_task(self._listen(reader))
        ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        for failed in (p for p in ready.get("preloaded", []) if not p["ok"]):
            log.warning("zygote could not preload", module=failed["module"], error=failed["error"])

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._on_event(json.loads(line))
        except (OSError, ValueError) as exc:
            log.error("zygote link broken", error=repr(exc))
        finally:
            self._on_gone()

    def _on_event(self, event: dict) -> None:
        op = event["op"]
        if op == "forked":
            future = self._forks.pop(event["id"], None)
            self._exits[event["pid"]] = asyncio.get_running_loop().create_future()
            if future is not None and not future.done():
                future.set_result(event["pid"])
        elif op == "exit":
            future = self._exits.pop(event["pid"], None)
            if future is not None and not future.done():
                future.set_result(event["code"])
        elif op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(event)

    def _on_gone(self) -> None:
        self.gone = True
        for future in [*self._forks.values(), *([self._ready] if self._ready else [])]:
            if not future.done():
                future.set_exception(ZygoteGone("zygote ended"))
        for future in self._exits.values():
            if not future.done():
                future.set_result(None)  # reparented: nobody can tell its exit code any more
        self._forks.clear()

    async def fork(self) -> ChildProcess:
        """A new child, waiting for its Start frame."""
        if self.gone or self._commands is None:
            raise ZygoteGone("zygote is not running")
        ours, theirs = socket.socketpair()
        fork_id = next(self._ids)
        future = self._forks[fork_id] = _quiet_future()
        try:
            line = json.dumps({"op": "fork", "id": fork_id}).encode() + b"\n"
            socket.send_fds(self._commands, [line], [theirs.fileno()])
        except OSError as exc:
            self._forks.pop(fork_id, None)
            ours.close()
            raise ZygoteGone(f"zygote does not listen: {exc}") from None
        finally:
            theirs.close()
        pid = await future
        reader, writer = await asyncio.open_connection(sock=ours)
        return ChildProcess(pid, reader, writer, self._exits[pid], self)

    async def idle(self) -> None:
        """Until every child it forked has ended (or it is gone)."""
        while self._exits and not self.gone:
            await asyncio.wait(list(self._exits.values()))

    async def close(self, timeout: float = 5.0) -> None:
        """Close the command socket (the zygote exits on EOF, and its children with it) and wait for it."""
        if self._commands is not None:
            self._commands.close()
            self._commands = None
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
        if self._listener is not None:
            self._listener.cancel()
        if self._events_writer is not None:
            self._events_writer.close()


def terminate(child: ChildProcess) -> None:
    """Ask a job to stop (its SDK's should_stop turns True)."""
    child.signal(signal.SIGTERM)


def kill(child: ChildProcess) -> None:
    """End a job and everything it spawned, now."""
    child.signal(signal.SIGKILL, group=True)
