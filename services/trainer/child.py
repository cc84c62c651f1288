"""A job's own process: forked warm from a zygote, it waits for its Start, runs the workload, reports Done."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import traceback
from typing import Any

import msgspec

from services.trainer import wire
from services.trainer.context import Channel, ChildContext, end_job_group
from services.trainer.sdk import REUSE_MARK, CheckpointError
from services.trainer.workloads_registry import load

TRACEBACK_LINES = 50
PR_SET_PDEATHSIG = 1
MAX_TEXT = 16_000


def tail(text: str, lines: int = TRACEBACK_LINES, limit: int = MAX_TEXT) -> str:
    """The last `lines` lines of a text, and at most `limit` characters of them."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])[-limit:]


def error_text(exc: BaseException) -> str:
    """`Type: message`, bounded."""
    return f"{exc.__class__.__name__}: {exc}"[:MAX_TEXT]


def plain_result(result: Any) -> dict[str, Any]:
    """A workload's return value as a JSON-ready dict (anything odd becomes its repr)."""
    if result is None:
        return {}
    if not isinstance(result, dict):
        result = {"value": result}
    return msgspec.json.decode(msgspec.json.encode(result, enc_hook=_plain))


def _plain(obj: Any) -> Any:
    try:
        return float(obj)  # tensors and numpy scalars
    except (TypeError, ValueError):
        return repr(obj)


def prepare_environment(start: wire.Start) -> None:
    """Narrow the visible GPUs to the job's before anything initialises CUDA."""
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in start.gpu_indices)
    os.environ["STOKER_JOB_ID"] = start.job_id
    os.environ["STOKER_ATTEMPT"] = str(start.attempt)
    if start.traceparent:
        os.environ["TRACEPARENT"] = start.traceparent  # OpenTelemetry's carrier for a process's parent span
    else:
        os.environ.pop("TRACEPARENT", None)


def run_workload(target: str, ctx: ChildContext, registered: bool = False) -> wire.Done:
    """Load and run the workload; every way it can end becomes a Done frame."""
    try:
        fn = load(target, registered)
    except BaseException as exc:
        return wire.Done(outcome="failed", error=f"cannot load workload {ctx.workload!r}: {error_text(exc)}",
                         traceback=tail(traceback.format_exc()), retryable=False)
    try:
        result = fn(ctx)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return wire.Done(outcome="completed", stop_seen=ctx.stop_seen)
        return wire.Done(outcome="failed", error=f"workload exited with {exc.code!r}",
                         traceback=tail(traceback.format_exc()), retryable=True, stop_seen=ctx.stop_seen)
    except BaseException as exc:
        return raised(exc, ctx)
    try:
        plain = plain_result(result)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        plain = {"unserialisable_result": repr(exc)}
    return wire.Done(outcome="completed", result=plain, stop_seen=ctx.stop_seen,
                     reusable=getattr(fn, REUSE_MARK, None) is True)


def raised(exc: BaseException, ctx: ChildContext) -> wire.Done:
    """The end of a job whose code raised `exc` (being handled): failed, retryably, with its traceback."""
    return wire.Done(outcome="failed", error=error_text(exc), traceback=tail(traceback.format_exc()),
                     retryable=True, stop_seen=ctx.stop_seen)


def closed(ctx: ChildContext, done: wire.Done) -> wire.Done:
    """Close the job's context before its end is told: the held-back sample sent, the last checkpoint stored.

    A completed job whose last checkpoint could not be stored fails as if save_checkpoint had raised.
    """
    try:
        ctx.close()
    except CheckpointError as exc:
        if done.outcome == "completed":
            return raised(exc, ctx)
    return done


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent (the zygote) ends; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent ended before the request took effect
        os._exit(1)
    return True


def _has_children() -> bool:
    """Whether this process has a child process (a helper the workload left, running or not reaped)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def run_job(sock: socket.socket, start: wire.Start, target: str, tied_to_parent: bool = False,
            stopped_early: list[bool] | None = None) -> None:
    """Run one attempt to its end and tell the agent how it ended; returns only when the process may run
    the next job of the same workload (Done.reusable), else never."""
    prepare_environment(start)
    channel = Channel(sock)
    ctx = ChildContext(start, channel)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: ctx.request_stop())
    if stopped_early:
        ctx.request_stop()  # asked to stop between its Start and now
    if not tied_to_parent:
        # Without the kernel's help, a thread watches the agent's socket and ends the job if it closes.
        channel.listening = True
        threading.Thread(target=channel.listen, name="stoker-agent-link", daemon=True).start()
    done = run_workload(target, ctx, start.registered)
    try:
        done = closed(ctx, done)
        if done.reusable:
            ctx.join_flusher(1.0)
        if done.reusable and not (done.outcome == "completed" and not done.stop_seen and not ctx.stop_requested
                                  and not start.gpu_indices and threading.active_count() == 1
                                  and not _has_children()):
            done = msgspec.structs.replace(done, reusable=False)
        channel.finishing = True
        channel.send(done)
    except OSError:
        done = msgspec.structs.replace(done, reusable=False)
    sys.stdout.flush()
    sys.stderr.flush()
    if not done.reusable:
        end_job_group()  # no helper process the workload started (data loaders, tools) outlives the job


def serve_spare(sock: socket.socket, parent_pid: int) -> None:
    """A spare child: wait for a Start frame and run it; exit when the agent lets the spare go.

    After a job whose workload passes its process on (Done.reusable), wait for the next Start the same way.
    """
    # The zygote ends when the agent does; tied to it, a job cannot outlive its worker.
    tied = die_with_parent(parent_pid)
    while True:
        stopped_early: list[bool] = []
        signal.signal(signal.SIGTERM, lambda _sig, _frame, early=stopped_early: early.append(True))
        try:
            frame = wire.recv(sock)
        except (OSError, msgspec.DecodeError):
            frame = None
        if not isinstance(frame, wire.Start):
            os._exit(0)
        run_job(sock, frame, frame.target, tied, stopped_early)
