"""The zygote: a small process with Python and a workload's imports loaded that forks job children.

Forking from it keeps every job in a process of its own (a crash or an OOM kill takes only that job)
while interpreter start-up and imports leave the dispatch path. It never starts a thread, so forking
is safe. Commands arrive as JSON lines on one socket (with the child's socket as SCM_RIGHTS for
`fork`); replies and child exit codes go back as JSON lines on another.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from collections import deque


def _preload(module: str) -> dict:
    try:
        importlib.import_module(module)
    except BaseException as exc:  # a workload's import may raise anything; the zygote must live on
        return {"op": "preloaded", "module": module, "ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
    return {"op": "preloaded", "module": module, "ok": True}


def _become_child(child_sock: int, owned: list[socket.socket | int], parent: int) -> None:
    os.setpgid(0, 0)  # its own group: the agent can end the job and anything it spawned together
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    # SIGTERM stays ignored until the child installs its own handler: a stop is never fatal to it.
    for item in owned:
        # Detach first: a socket object closing its old fd number later could close a job's file.
        os.close(item.detach() if isinstance(item, socket.socket) else item)
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("800")  # under memory pressure the kernel should pick a job, not the agent
    except OSError:
        pass
    from services.trainer.child import serve_spare

    serve_spare(socket.socket(fileno=child_sock), parent)
    os._exit(0)


def _fork(command: dict, fds: deque[int], owned: list[socket.socket | int]) -> dict:
    child_sock = fds.popleft()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _become_child(child_sock, owned, parent)
    os.close(child_sock)
    return {"op": "forked", "id": command["id"], "pid": pid}


def _reap() -> list[dict]:
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append({"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(commands: socket.socket, events: socket.socket) -> None:
    """Answer fork and preload commands until the agent closes the command socket."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    owned: list[socket.socket | int] = [commands, events, wake_r, wake_w]
    buffer, fds = b"", deque()
    while True:
        readable, _, _ = select.select([commands, wake_r], [], [])
        replies: list[dict] = []
        if wake_r in readable:
            os.read(wake_r, 4096)
            replies += _reap()
        if commands in readable:
            data, received, _flags, _addr = socket.recv_fds(commands, 65536, 64)
            if not data:
                return
            fds.extend(received)
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                command = json.loads(line)
                replies.append(_fork(command, fds, owned) if command["op"] == "fork" else _preload(command["module"]))
            replies += _reap()
        if replies:
            events.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in replies))


def main(argv: list[str]) -> None:
    """`python -m services.trainer.zygote CMD_FD EVENT_FD [MODULE…]`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the agent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it ends when the agent closes its socket
    commands, events = socket.socket(fileno=int(argv[0])), socket.socket(fileno=int(argv[1]))
    importlib.import_module("services.trainer.child")
    preloaded = [_preload(module) for module in argv[2:]]
    import ctypes  # noqa: F401  (children use it to tie their life to ours; import it once, here)

    gc.collect()
    gc.freeze()  # children's collections then skip everything loaded so far: fewer copied pages
    try:
        events.sendall(json.dumps({"op": "ready", "pid": os.getpid(), "preloaded": preloaded}).encode() + b"\n")
        serve(commands, events)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent went away: so do we


if __name__ == "__main__":
    main(sys.argv[1:])
