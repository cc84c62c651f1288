"""The attempt journal a worker keeps so a restart can settle what it left behind."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.commands import ReportJobFinished
from contracts.dispatch import Assignment
from services.trainer.outbox import AttemptLog


def assignment(job_id: str, attempt: int = 1) -> Assignment:
    return Assignment(job_id=job_id, attempt=attempt, worker_id="w", kind="train", workload="noop",
                      assigned_at=datetime(2025, 1, 1, tzinfo=UTC))


def finished(job_id: str) -> ReportJobFinished:
    return ReportJobFinished(job_id=job_id, attempt=1, worker_id="w", outcome="completed", result={"a": 1})


def test_a_fresh_journal_has_nothing_left(tmp_path):
    assert AttemptLog(tmp_path).leftovers() == []


def test_unsettled_attempts_are_left_over_with_their_outcome_if_known(tmp_path):
    log = AttemptLog(tmp_path)
    log.record(assignment("running"))
    log.record(assignment("ended"))
    log.finish(finished("ended"))
    log.record(assignment("settled"))
    log.forget("settled", 1)
    log.close()
    assert sorted(AttemptLog(tmp_path).leftovers(), key=lambda x: x[0]) == [
        ("ended", 1, finished("ended")), ("running", 1, None)]


def test_a_torn_last_line_is_ignored(tmp_path):
    log = AttemptLog(tmp_path)
    log.record(assignment("kept"))
    log.close()
    with (tmp_path / "attempts.jsonl").open("ab") as journal:
        journal.write(b'{"op": "+", "job_id": "torn", "att')
    assert AttemptLog(tmp_path).leftovers() == [("kept", 1, None)]


def test_the_journal_is_compacted(tmp_path):
    log = AttemptLog(tmp_path, compact_every=10)
    for i in range(50):
        log.record(assignment(f"j{i}"))
        log.forget(f"j{i}", 1)
    log.record(assignment("last"))
    log.close()
    lines = (tmp_path / "attempts.jsonl").read_bytes().splitlines()
    assert len(lines) < 12
    assert AttemptLog(tmp_path).leftovers() == [("last", 1, None)]


def test_opening_settles_nothing_by_itself(tmp_path):
    log = AttemptLog(tmp_path)
    log.record(assignment("a"))
    log.close()
    again = AttemptLog(tmp_path)
    again.close()
    assert AttemptLog(tmp_path).leftovers() == [("a", 1, None)]  # only a delivered report forgets it
