"""Which `module:function` targets run: never the standard library's, only where the worker allows, only marked."""

from __future__ import annotations

import pytest

from contracts.commands import SubmitJob
from contracts.errors import UnknownWorkload
from contracts.workloads import refused_target
from services.scheduler.board import initial_state
from services.trainer.sdk import WORKLOAD_MARK, workload
from services.trainer.workloads_registry import Registry, load
from tests.unit.test_scheduler_domain import decide, fold, worker


@pytest.mark.parametrize("target", ["builtins:print", "os:system", "subprocess:run", "os.path:join", "code:interact",
                                    "pickle:loads", "importlib:import_module", "__main__:run"])
def test_standard_library_targets_are_never_workloads(target):
    why = refused_target(target)
    assert why is not None and f"{target!r} is not a workload" in why and "standard library" in why


@pytest.mark.parametrize("target", ["mypkg:run", "mypkg.train:main", "services.trainer.workloads.basic:noop",
                                    "ossify:run", "tests.integration.test_trainer_workloads:chatty"])
def test_targets_from_other_packages_may_be(target):
    assert refused_target(target) is None


def test_the_scheduler_refuses_a_standard_library_target_at_submission():
    for state in (initial_state(), fold(worker())):  # whether or not a worker is registered
        with pytest.raises(UnknownWorkload, match="'builtins:print' is not a workload"):
            decide(SubmitJob(workload="builtins:print"), state)


@pytest.mark.parametrize(("target_modules", "target", "message"), [
    (None, "builtins:print", "'builtins:print' is not a workload: 'builtins' is Python's standard library"),
    (None, "os:system", "'os' is Python's standard library"),
    ((), "mypkg:run", "it runs registered workloads only \\(target_modules = \\[\\]\\)"),
    (("mypkg",), "other:run", "allows module:function targets from mypkg"),
    (("os",), "os:system", "standard library"),  # not even where an admin lists it
])
def test_a_worker_refuses_targets_before_importing_anything(target_modules, target, message):
    with pytest.raises(UnknownWorkload, match=message):
        Registry(target_modules).target(target)


def test_by_default_a_worker_offers_targets_from_any_other_package():
    assert Registry().target("mypkg.train:run") == "mypkg.train:run"
    assert Registry(()).target("noop") == "services.trainer.workloads.basic:noop"  # registered names still run


def unmarked(ctx):
    """A function that is no workload."""
    return {}


@workload
def marked(ctx):
    """A workload."""
    return {}


def test_a_target_runs_only_when_its_function_is_marked_a_workload():
    assert load(f"{__name__}:marked") is marked and getattr(marked, WORKLOAD_MARK) is True
    with pytest.raises(UnknownWorkload, match=r"is not a workload: mark it with @workload"):
        load(f"{__name__}:unmarked")
    assert load(f"{__name__}:unmarked", registered=True) is unmarked  # an entry point is its package's declaration


def test_the_job_process_refuses_a_standard_library_target_too():
    with pytest.raises(UnknownWorkload, match="standard library"):
        load("builtins:print", registered=True)
