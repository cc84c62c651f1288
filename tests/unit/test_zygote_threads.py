"""The OpenMP settings job processes get from their zygote."""

from __future__ import annotations

from services.trainer.zygote import thread_environment


def test_job_processes_get_passive_openmp_threads_by_default() -> None:
    assert thread_environment({"PATH": "/usr/bin"}) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_a_wait_policy_set_for_the_worker_wins() -> None:
    assert thread_environment({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
