"""How an attempt's end becomes an outcome, and how workloads are found by name."""

from __future__ import annotations

import pytest

from services.trainer.child import plain_result, tail
from services.trainer.outcome import crash_error, decide
from services.trainer.wire import Done, Progress, Start, pack, unpack
from services.trainer.workloads_registry import Registry, UnknownWorkload, eval_name, is_target, load

COMPLETED = Done(outcome="completed", result={"score": 1})
COMPLETED_AFTER_STOP = Done(outcome="completed", result={"stopped": True}, stop_seen=True)
FAILED = Done(outcome="failed", error="ValueError: x", traceback="tb", retryable=True)


@pytest.mark.parametrize(("done", "code", "stop", "outcome"), [
    (COMPLETED, 0, None, "completed"),
    (FAILED, 0, None, "failed"),
    (None, -9, None, "failed"),
    (COMPLETED_AFTER_STOP, 0, "requested", "stopped"),
    (COMPLETED_AFTER_STOP, 0, "shutdown", "interrupted"),
    (COMPLETED, 0, "requested", "completed"),  # it finished before it ever saw the stop
    (None, -9, "requested", "stopped"),  # killed after the grace period
    (FAILED, 0, "shutdown", "interrupted"),
])
def test_outcomes(done, code, stop, outcome):
    assert decide(done, code, stop).outcome == outcome


def test_a_failure_keeps_its_error_and_traceback():
    ending = decide(FAILED, 0, None)
    assert (ending.error, ending.traceback, ending.retryable) == ("ValueError: x", "tb", True)


@pytest.mark.parametrize(("code", "text"), [(-9, "SIGKILL"), (-11, "SIGSEGV"), (3, "status 3"), (None, "unknown")])
def test_crash_errors_say_what_happened(code, text):
    assert text in crash_error(code)


def test_traceback_tail_keeps_the_last_lines():
    text = "\n".join(f"line {i}" for i in range(200))
    kept = tail(text, lines=50)
    assert kept.splitlines()[0] == "line 150" and kept.splitlines()[-1] == "line 199"
    assert len(tail("x" * 100_000)) == 16_000


def test_results_become_plain_json():
    class Odd:
        def __repr__(self):
            return "<odd>"

    assert plain_result(None) == {}
    assert plain_result(3) == {"value": 3}
    assert plain_result({"a": Odd(), "b": [1, 2]}) == {"a": "<odd>", "b": [1, 2]}


def test_frames_round_trip():
    start = Start(job_id="j", attempt=2, worker_id="w", kind="train", workload="noop", target="m:f",
                  spool_dir="/tmp/x", params={"lr": 0.1})
    for frame in (start, Progress(iteration=3, loss=0.5, metrics={"a": 1.0}, at=1.5), COMPLETED):
        assert unpack(pack(frame)[4:]) == frame


def test_registered_workloads_resolve_to_their_targets():
    registry = Registry()
    assert registry.target("noop") == "services.trainer.workloads.basic:noop"
    assert registry.target("pkg.mod:fn") == "pkg.mod:fn"
    assert registry.is_registered("sleep") and not registry.is_registered("pkg.mod:fn")
    with pytest.raises(UnknownWorkload, match=r"unknown workload 'nope'.*noop"):
        registry.target("nope")


def test_targets_load_or_fail_clearly():
    assert load("services.trainer.workloads.basic:noop").__name__ == "noop"
    with pytest.raises(UnknownWorkload, match="has no"):
        load("services.trainer.workloads.basic:missing")
    with pytest.raises(ModuleNotFoundError):
        load("no_such_module_here:run")
    assert is_target("a.b:c") and not is_target("2048") and not is_target("a:b:c")


@pytest.mark.parametrize(("workload", "known", "expected"), [
    ("2048", ["2048", "2048-eval"], "2048-eval"),
    ("2048-eval", ["2048", "2048-eval"], "2048-eval"),
    ("noop", ["noop"], "noop"),
    ("mod:fn", [], "mod:fn"),
])
def test_an_evaluation_runs_the_eval_workload_when_there_is_one(workload, known, expected):
    assert eval_name(workload, known) == expected


def test_the_worker_resolves_an_evaluation_to_its_eval_workload():
    registry = Registry()
    assert registry.resolve("2048", "eval") == "2048-eval"
    assert registry.resolve("2048-eval", "eval") == "2048-eval"
    assert registry.resolve("noop", "eval") == "noop"  # no noop-eval: the workload itself evaluates
    assert registry.resolve("2048", "train") == "2048"


def test_a_worker_runs_targets_only_from_its_target_modules():
    registry = Registry(target_modules=("pkg",))
    assert registry.target("noop") == "services.trainer.workloads.basic:noop"
    assert registry.target("pkg.mod:fn") == "pkg.mod:fn" and registry.target("pkg:fn") == "pkg:fn"
    with pytest.raises(UnknownWorkload, match="allows module:function targets from pkg"):
        registry.target("pkgx.mod:fn")
    with pytest.raises(UnknownWorkload, match="registered workloads only"):
        Registry(target_modules=()).target("pkg:fn")
