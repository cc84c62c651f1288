"""Placement: priority and FIFO order, labels, GPUs, least loaded, round robin, slots never exceeded."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from contracts import events as ev
from services.scheduler.board import apply_in_place, initial_state, new_job
from services.scheduler.placement import place
from tests.unit.test_scheduler_domain import T0, assigned, fold, submitted, worker


def placed(state, now=T0) -> list[tuple[str, str]]:
    return [(p.job_id, p.worker_id) for p in place(state, now)]


def test_higher_priority_first_then_submission_order() -> None:
    state = fold(submitted("low"), submitted("high-1", priority=5), submitted("high-2", priority=5),
                 worker(slots=2))
    assert placed(state) == [("high-1", "w1"), ("high-2", "w1")]


def test_a_requeued_job_keeps_its_place_in_the_queue() -> None:
    state = fold(worker(), submitted("first"), assigned("first"), submitted("second"),
                 ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0),
                 ev.JobRequeued(job_id="first", attempt=2, reason="worker_lost", requeued_at=T0),
                 worker("w2"))
    assert placed(state) == [("first", "w2")]


def test_labels_must_all_be_offered() -> None:
    state = fold(submitted("a100", labels=("gpu", "a100")), submitted("plain"),
                 worker("w1", labels=("gpu",)), worker("w2", labels=("gpu", "a100", "x")))
    assert sorted(placed(state)) == [("a100", "w2"), ("plain", "w1")]


def test_gpu_jobs_take_free_gpu_indices_and_cannot_share_them() -> None:
    state = fold(worker(slots=4, gpus=3), submitted("two", gpus=2), submitted("also-two", gpus=2),
                 submitted("one", gpus=1))
    placements = place(state, T0)
    assert [(p.job_id, p.gpu_indices) for p in placements] == [("two", (0, 1)), ("one", (2,))]
    assert len({p.slot for p in placements}) == 2


def test_a_job_that_fits_nowhere_does_not_block_later_ones() -> None:
    state = fold(worker(slots=2), submitted("needs-gpu", gpus=1, priority=9), submitted("cpu"))
    assert placed(state) == [("cpu", "w1")]


def test_least_loaded_worker_wins() -> None:
    state = fold(worker("w1", slots=4), worker("w2", slots=4), submitted("a"), assigned("a", "w2"), submitted("b"))
    assert placed(state) == [("b", "w1")]


def test_load_is_relative_to_slots() -> None:
    # w1 runs 1 of 4 (25%), w2 runs 1 of 2 (50%): w1 is less loaded.
    state = fold(worker("w1", slots=4), worker("w2", slots=2), submitted("a"), assigned("a", "w1"),
                 submitted("b"), assigned("b", "w2"), submitted("c"))
    assert placed(state) == [("c", "w1")]


def test_equally_loaded_workers_take_turns() -> None:
    state = fold(*(worker(w, slots=10) for w in ("w1", "w2", "w3")))
    order = []
    for n in range(6):
        apply_in_place(state, submitted(f"j{n}"))
        (p,) = place(state, T0)
        apply_in_place(state, ev.JobAssigned(job_id=p.job_id, attempt=1, worker_id=p.worker_id, slot=p.slot,
                                             assigned_at=T0))
        apply_in_place(state, ev.JobCompleted(job_id=p.job_id, attempt=1, completed_at=T0))  # keep loads equal
        order.append(p.worker_id)
    assert order == ["w1", "w2", "w3", "w1", "w2", "w3"]


def test_slots_are_never_exceeded_and_never_shared() -> None:
    state = fold(worker("w1", slots=2), worker("w2", slots=3), worker("w3", slots=1),
                 *(submitted(f"j{n}") for n in range(10)))
    placements = place(state, T0)
    per_worker = Counter(p.worker_id for p in placements)
    assert per_worker == {"w1": 2, "w2": 3, "w3": 1}
    assert len({(p.worker_id, p.slot) for p in placements}) == len(placements)
    assert [p.job_id for p in placements] == [f"j{n}" for n in range(6)]


def test_slots_in_use_are_skipped() -> None:
    state = fold(worker(slots=3), submitted("a"), assigned("a", slot=1), submitted("b"), submitted("c"))
    assert sorted(p.slot for p in place(state, T0)) == [0, 2]


def test_only_healthy_workers_get_jobs() -> None:
    state = fold(worker("w1"), worker("w2"), worker("w3"), submitted("a"), submitted("b"), submitted("c"),
                 ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0),
                 ev.WorkerDeregistered(worker_id="w2", deregistered_at=T0))
    assert placed(state) == [("a", "w3")]


def test_jobs_go_only_to_workers_that_offer_their_workload() -> None:
    state = fold(worker("w1", slots=3, workloads=("noop",), target_modules=()),
                 worker("w2", slots=3, workloads=("2048", "2048-eval")),
                 submitted("train", workload="2048"), submitted("eval", workload="2048", kind="eval"),
                 submitted("target", workload="pkg:run"), submitted("noop"), submitted("nobody", workload="x"))
    assert sorted(placed(state)) == [("eval", "w2"), ("noop", "w1"), ("target", "w2"), ("train", "w2")]


def test_a_job_waiting_for_its_backoff_is_skipped() -> None:
    state = fold(worker(), submitted("later"), submitted("now"))
    state.jobs["later"].not_before = T0 + timedelta(seconds=5)
    assert placed(state) == [("now", "w1")]
    assert placed(state, T0 + timedelta(seconds=5)) == [("later", "w1")]


def test_a_new_job_is_considered_where_its_priority_puts_it() -> None:
    state = fold(submitted("queued", gpus=1), worker(slots=1, gpus=1))
    newcomer = new_job(submitted("urgent", gpus=1, priority=3), state.next_order)
    assert [p.job_id for p in place(state, T0, extra=newcomer)] == ["urgent"]
    calm = new_job(submitted("calm", gpus=1), state.next_order)
    assert [p.job_id for p in place(state, T0, extra=calm)] == ["queued"]


def test_nothing_to_place_on_an_empty_board() -> None:
    assert place(initial_state(), T0) == []
