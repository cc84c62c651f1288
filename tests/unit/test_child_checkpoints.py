"""Checkpoints from the job process: the loop goes on while the agent stores one, and a failed store is not lost.

The job's side of the socket is the real ChildContext; the agent's side is this test, answering each
`Saved` frame with an `Ack` when it chooses to.
"""

from __future__ import annotations

import socket
import threading

import pytest

from services.trainer import wire
from services.trainer.child import closed
from services.trainer.context import Channel, ChildContext
from services.trainer.sdk import CheckpointError

WAIT_S = 10.0


@pytest.fixture
def pair(tmp_path):
    job_end, agent_end = socket.socketpair()
    agent_end.settimeout(WAIT_S)
    start = wire.Start(kind="train", workload="w", job_id="j1", attempt=1, worker_id="w1", target="m:f",
                       spool_dir=str(tmp_path / "spool"), progress_interval_s=0.0)
    ctx = ChildContext(start, Channel(job_end))
    yield ctx, agent_end
    job_end.close()
    agent_end.close()


def next_saved(agent_end: socket.socket) -> wire.Saved:
    while True:
        frame = wire.recv(agent_end)
        assert frame is not None, "the job's end of the socket closed"
        if isinstance(frame, wire.Saved):
            return frame


def in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_save_returns_before_the_agent_has_stored_it_and_the_next_save_waits_for_it(pair):
    ctx, agent_end = pair
    ctx.save_checkpoint({"iteration": 5}, iteration=5)  # no Ack yet: it must not block
    first = next_saved(agent_end)
    assert first.iteration == 5
    second_done = threading.Event()
    saving = in_thread(lambda: (ctx.save_checkpoint({"iteration": 10}, iteration=10), second_done.set()))
    assert not second_done.wait(0.3), "a second checkpoint went ahead while the first was still being stored"
    agent_end.sendall(wire.pack(wire.Ack(seq=first.seq, ok=True)))
    assert second_done.wait(WAIT_S)
    saving.join(WAIT_S)
    assert next_saved(agent_end).iteration == 10


def test_a_checkpoint_that_was_not_stored_raises_at_the_next_save(pair):
    ctx, agent_end = pair
    ctx.save_checkpoint({"iteration": 5}, iteration=5)
    agent_end.sendall(wire.pack(wire.Ack(seq=next_saved(agent_end).seq, ok=False, error="object store gone")))
    with pytest.raises(CheckpointError, match="iteration 5 was not stored: object store gone"):
        ctx.save_checkpoint({"iteration": 10}, iteration=10)


def test_the_end_waits_for_the_last_checkpoint_and_a_failed_one_fails_a_completed_job(pair):
    ctx, agent_end = pair
    ctx.save_checkpoint({"iteration": 7}, iteration=7)
    saved = next_saved(agent_end)
    ended: list[wire.Done] = []
    ending = in_thread(lambda: ended.append(closed(ctx, wire.Done(outcome="completed", result={"iteration": 7}))))
    ending.join(0.3)
    assert not ended, "the job's end was told before its last checkpoint was stored"
    agent_end.sendall(wire.pack(wire.Ack(seq=saved.seq, ok=False, error="disk full")))
    ending.join(WAIT_S)
    (done,) = ended
    assert done.outcome == "failed" and done.retryable
    assert "CheckpointError" in done.error and "iteration 7" in done.error


def test_a_stored_last_checkpoint_leaves_the_ending_as_it_was(pair):
    ctx, agent_end = pair
    ctx.save_checkpoint(b"raw", iteration=3)
    agent_end.sendall(wire.pack(wire.Ack(seq=next_saved(agent_end).seq, ok=True)))
    done = wire.Done(outcome="completed", result={"ok": True})
    assert closed(ctx, done) == done


def test_a_failed_job_stays_failed_with_its_own_error_when_its_last_checkpoint_fails(pair):
    ctx, agent_end = pair
    ctx.save_checkpoint(b"raw", iteration=3)
    agent_end.sendall(wire.pack(wire.Ack(seq=next_saved(agent_end).seq, ok=False, error="gone")))
    done = wire.Done(outcome="failed", error="ValueError: boom", retryable=True)
    assert closed(ctx, done) == done
