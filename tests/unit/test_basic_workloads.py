"""noop, sleep and fail: reports, checkpoints, stop requests and exact resumption."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from services.trainer.workloads.basic import fail, noop, sleep
from tests.workload_context import RecordingContext


def iterations(ctx: RecordingContext) -> list[int]:
    return [r["iteration"] for r in ctx.reports]


def test_noop_without_iterations_reports_once_and_returns() -> None:
    ctx = RecordingContext(workload="noop")
    assert noop(ctx)["ok"] is True
    assert iterations(ctx) == [1]
    assert ctx.checkpoints == []


def test_noop_counts_through_max_iterations_with_checkpoints() -> None:
    ctx = RecordingContext(workload="noop", max_iterations=7, params={"checkpoint_every": "3"})
    result = noop(ctx)
    assert result == {"ok": True, "iteration": 7, "resumed_from": None, "iterations_run": 7, "stopped": False}
    assert iterations(ctx) == list(range(1, 8))
    assert [i for i, _ in ctx.checkpoints] == [3, 6]
    assert ctx.checkpoints[-1][1] == {"workload": "noop", "iteration": 6}


def test_noop_resumes_after_the_checkpointed_iteration() -> None:
    first = RecordingContext(workload="noop", max_iterations=10, params={"checkpoint_every": 4})
    noop(first)
    # As if the worker died after iteration 5: only the checkpoint at 4 survived.
    retry = RecordingContext(workload="noop", max_iterations=10, params={"checkpoint_every": 4},
                             checkpoints=first.checkpoints[:1])
    result = noop(retry)
    assert result["resumed_from"] == 4 and result["iterations_run"] == 6
    assert iterations(retry) == list(range(5, 11))


def test_noop_with_nothing_left_to_do_reports_its_last_iteration() -> None:
    ctx = RecordingContext(workload="noop", max_iterations=3)
    ctx.save_checkpoint({"iteration": 3}, iteration=3)
    assert noop(ctx)["iterations_run"] == 0
    assert iterations(ctx) == [3]


def test_sleep_for_seconds_takes_about_that_long() -> None:
    ctx = RecordingContext(workload="sleep", params={"seconds": "0.2"})
    t = time.monotonic()
    result = sleep(ctx)
    assert time.monotonic() - t >= 0.19
    assert result["ok"] is True and result["stopped"] is False
    assert ctx.reports[-1]["progress"] == 1.0


def test_sleep_stopped_saves_its_last_iteration_and_resumes_exactly() -> None:
    ctx = RecordingContext(workload="sleep", max_iterations=10, params={"step_s": 0.001, "checkpoint_every": 3},
                           stop_after_reports=4)
    result = sleep(ctx)
    assert result["stopped"] is True and result["iteration"] == 4
    assert [i for i, _ in ctx.checkpoints] == [3, 4]
    retry = ctx.next_attempt()
    result = sleep(retry)
    assert result == {"ok": True, "iteration": 10, "resumed_from": 4, "iterations_run": 6, "stopped": False}
    assert iterations(retry) == list(range(5, 11))
    assert [i for i, _ in retry.checkpoints] == [3, 4, 6, 9]


def test_sleep_notices_a_stop_within_a_long_step() -> None:
    t = time.monotonic()

    class StopSoon(RecordingContext):
        @property
        def should_stop(self) -> bool:
            return time.monotonic() - t > 0.1

    ctx = StopSoon(workload="sleep", max_iterations=2, params={"step_s": 30})
    result = sleep(ctx)
    assert time.monotonic() - t < 5
    assert result["stopped"] is True and result["iteration"] == 0
    assert ctx.checkpoints == []


def test_fail_raises_the_given_message() -> None:
    with pytest.raises(RuntimeError, match="failing on purpose"):
        fail(RecordingContext(workload="fail"))
    with pytest.raises(RuntimeError, match="boom"):
        fail(RecordingContext(workload="fail", params={"message": "boom", "retryable": True}))


def test_basic_workloads_do_not_import_torch() -> None:
    code = "import sys, services.trainer.workloads.basic; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
