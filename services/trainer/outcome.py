"""How an attempt ended, decided from what the child said, how it exited, and who asked it to stop."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any, Literal

from services.trainer.wire import Done

Outcome = Literal["completed", "failed", "stopped", "interrupted"]
SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class Ending:
    """The fields of a ReportJobFinished."""

    outcome: Outcome
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    traceback: str = ""
    retryable: bool = False


def crash_error(exit_code: int | None) -> str:
    """Why a child that never said Done ended."""
    if exit_code is None:
        return "the job's process ended without reporting (exit status unknown)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = " (out of memory, or killed from outside)" if -exit_code == signal.SIGKILL else ""
        return f"the job's process was killed by {name}{hint}"
    return f"the job's process exited with status {exit_code} without reporting"


def decide(done: Done | None, exit_code: int | None, stop_reason: str | None) -> Ending:
    """The outcome: a stop wins unless the workload finished without ever seeing it."""
    finished_unasked = done is not None and done.outcome == "completed" and not done.stop_seen
    if stop_reason is not None and not finished_unasked:
        outcome: Outcome = "interrupted" if stop_reason == SHUTDOWN else "stopped"
        result = done.result if done is not None else {}
        return Ending(outcome, result=result, error="" if outcome == "stopped" else "worker shutting down")
    if done is None:
        return Ending("failed", error=crash_error(exit_code), retryable=True)
    if done.outcome == "completed":
        return Ending("completed", result=done.result)
    return Ending("failed", error=done.error, traceback=done.traceback, retryable=done.retryable)
