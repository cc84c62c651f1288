"""The intra-op threads job processes get: an equal share of the cores per slot (services/trainer/threads.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.trainer.threads import thread_environment, usable_cores


@pytest.mark.parametrize(("cores", "slots", "threads"), [(2, 1, "2"), (2, 2, "1"), (16, 3, "5"), (2, 4, "1"),
                                                         (8, 0, "8")])
def test_each_slot_gets_an_equal_share_of_the_cores(cores: int, slots: int, threads: str) -> None:
    assert thread_environment({"PATH": "/usr/bin"}, cores, slots) == {"OMP_NUM_THREADS": threads}


@given(cores=st.integers(1, 512), slots=st.integers(0, 256))
def test_jobs_running_at_once_never_ask_for_more_threads_than_cores_unless_each_has_one(cores: int,
                                                                                     slots: int) -> None:
    threads = int(thread_environment({}, cores, slots)["OMP_NUM_THREADS"])
    assert threads >= 1 and (threads * max(1, slots) <= cores or threads == 1)


def test_a_thread_count_set_for_the_worker_wins() -> None:
    assert thread_environment({"OMP_NUM_THREADS": "3"}, 16, 1) == {}


def test_usable_cores_counts_this_process_s_affinity() -> None:
    assert 1 <= usable_cores() <= 4096
