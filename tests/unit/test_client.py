"""The Python client's pure parts: where it finds the gateway, errors by status, the operations, follow's cursors."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec
import pytest

from contracts import events as ev
from contracts.base import utcnow
from contracts.telemetry import EpisodeReport, JobProgress
from gateway.bootstrap import ADMIN_TOKEN_FILE
from gateway.client import calls, config
from gateway.client.errors import (
    Forbidden,
    InvalidRequest,
    JobFailed,
    NotConfigured,
    NotFound,
    ServerError,
    StokerError,
    Timeout,
    Unavailable,
    error_for,
)
from gateway.client.follow import Follow, Reconnect, advance_bar, progress_bar, refused
from gateway.schemas.jobs import (
    EpisodeHistory,
    EpisodeSample,
    JobPage,
    JobTimeline,
    JobView,
    ProgressHistory,
    ProgressSample,
    StopResult,
)
from ops.runstate import STATE_FILE

JOB = "01JAAAAAAAAAAAAAAAAAAAAAAA"


def job_view(status: str = "running", **fields: Any) -> JobView:
    now = utcnow().isoformat()
    row = {"id": JOB, "kind": "train", "workload": "sleep", "max_iterations": 10, "status": status, "attempt": 1,
           "worker_id": "w1", "idempotency_key": None, "submitted_at": now, "assigned_at": None,
           "started_at": None, "finished_at": None, "stop_requested": False, "resumed_from": None,
           "last_checkpoint": None, "last_checkpoint_iteration": None, "checkpoints": 0, "requeues": 0,
           "error": None, "result": None, "updated_seq": 1, **fields}
    return msgspec.convert(row, JobView, strict=False)


# Where the gateway and the token come from

def up_here(tmp_path, url: str = "http://127.0.0.1:8123", token: str = "from-disk") -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"pid": 1, "gateway": url}))
    (tmp_path / ADMIN_TOKEN_FILE).write_text(token + "\n")


def test_the_client_reads_the_files_stoker_up_writes() -> None:
    assert (config.STATE_FILE, config.ADMIN_TOKEN_FILE) == (STATE_FILE, ADMIN_TOKEN_FILE)


def test_arguments_then_environment_then_the_data_dir(tmp_path) -> None:
    up_here(tmp_path)
    env = {"STOKER_URL": "http://gw:1/", "STOKER_TOKEN": "from-env", "STOKER_DATA_DIR": str(tmp_path)}
    assert config.resolve("http://arg:2", "from-arg", None, env) == ("http://arg:2", "from-arg")
    assert config.resolve(None, None, None, env) == ("http://gw:1", "from-env")
    assert config.resolve(None, None, None, {"STOKER_DATA_DIR": str(tmp_path)}) == ("http://127.0.0.1:8123",
                                                                                   "from-disk")
    assert config.resolve("http://arg:2", None, tmp_path, {}) == ("http://arg:2", "from-disk")


def test_nothing_to_go_on_says_what_is_missing_and_where_it_looked(tmp_path) -> None:
    with pytest.raises(NotConfigured, match=r"has no gateway URL and no token: .*STOKER_URL") as missing:
        config.resolve(None, None, tmp_path, {})
    assert str(tmp_path) in str(missing.value)
    (tmp_path / STATE_FILE).write_text("not json")
    with pytest.raises(NotConfigured, match="has no gateway URL: "):
        config.resolve(None, "t", tmp_path, {})


# Errors by what went wrong

@pytest.mark.parametrize(("status", "cls"), [
    (400, InvalidRequest), (401, Forbidden), (403, Forbidden), (404, NotFound), (409, InvalidRequest),
    (413, InvalidRequest), (422, InvalidRequest), (429, Forbidden), (500, ServerError), (503, Unavailable),
    (504, Timeout), (418, InvalidRequest),
])
def test_each_status_is_an_error_of_its_kind(status: int, cls: type) -> None:
    error = error_for(status, "the gateway's words")
    assert type(error) is cls and error.status == status and str(error) == "the gateway's words"


def test_errors_are_also_the_standard_exceptions_they_resemble() -> None:
    assert isinstance(Timeout("x"), TimeoutError) and isinstance(Unavailable("x"), ConnectionError)
    assert isinstance(NotFound("x"), LookupError) and isinstance(Forbidden("x"), PermissionError)


def test_an_error_body_gives_its_detail_and_the_fields_it_names() -> None:
    call = calls.Call("POST", "/api/v1/jobs", JobView)
    body = b'{"status_code": 400, "detail": "Validation failed", "extra": [{"key": "workload"}]}'
    with pytest.raises(InvalidRequest, match=r'Validation failed: \[\{"key":"workload"\}\]'):
        calls.answer(call, 400, body)
    with pytest.raises(ServerError, match="upstream broke"):
        calls.answer(call, 502, b"upstream broke")


def test_a_reply_decodes_into_the_gateways_schema_or_says_it_does_not() -> None:
    call = calls.Call("POST", "/x", StopResult)
    assert calls.answer(call, 202, b'{"job_ids": ["a"]}') == StopResult(job_ids=["a"])
    with pytest.raises(StokerError, match="not a StopResult"):
        calls.answer(call, 200, b'{"items": []}')


# The operations, driven by hand

def drive(op, replies: list[Any]) -> tuple[list[Any], Any]:
    """Run an operation, answering each request with the next reply; (the requests, the result)."""
    asked, reply = [], None
    while True:
        try:
            step = op.send(reply)
        except StopIteration as done:
            return asked, done.value
        asked.append(step)
        reply = None if isinstance(step, calls.Pause) else replies.pop(0)


def test_jobs_follows_the_cursor_and_stops_at_the_limit() -> None:
    view = job_view()
    asked, found = drive(calls.jobs(["failed", "stopped"], "train", None, None),
                         [JobPage(items=[view], next_cursor="c1"), JobPage(items=[view], next_cursor=None)])
    assert found == [view, view]
    assert asked[0].params == [("status", "failed"), ("status", "stopped"), ("limit", 500), ("kind", "train")]
    assert ("cursor", "c1") in asked[1].params
    asked, found = drive(calls.jobs(None, None, None, 1), [JobPage(items=[view], next_cursor="more")])
    assert len(asked) == 1 and found == [view] and ("limit", 1) in asked[0].params


def test_an_id_cannot_reach_another_route() -> None:
    assert calls.job_path("../tokens", "stop") == "/api/v1/jobs/..%2Ftokens/stop"


def test_wait_raises_a_failure_with_the_end_of_its_traceback() -> None:
    traceback = "\n".join(f"  line {i}" for i in range(40)) + "\nRuntimeError: NaN"
    timeline = msgspec.convert({"job_id": JOB, "events": [
        {"seq": 9, "time": None, "type": "JobFailed", "event": {"error": "NaN", "traceback": traceback}}]},
        JobTimeline)
    failed = job_view("failed", error="RuntimeError: NaN")
    with pytest.raises(JobFailed) as raised:
        drive(calls.settle(JOB, None, raise_failure=True), [job_view(), failed, timeline])
    lines = raised.value.traceback.splitlines()
    assert len(lines) == calls.TRACEBACK_LINES and lines[-1] == "RuntimeError: NaN" and "line 39" in lines[-2]
    assert str(raised.value).startswith(f"job {JOB} failed: RuntimeError: NaN\n")
    assert drive(calls.settle(JOB, None, raise_failure=False), [failed])[1] == failed


def test_wait_gives_up_after_its_timeout() -> None:
    with pytest.raises(Timeout, match="still running after 0 s"):
        drive(calls.settle(JOB, 0, raise_failure=True), [job_view()])


def test_an_evaluation_takes_its_training_runs_workload_unless_given() -> None:
    asked, _ = drive(calls.submit_evaluation(JOB, {"workload": None, "episodes": 3}), [job_view(), job_view()])
    assert asked[0].path == f"/api/v1/jobs/{JOB}"
    assert (asked[1].body.kind, asked[1].body.workload, asked[1].body.checkpoint_of) == ("eval", "sleep", JOB)


def test_logs_reads_every_page(monkeypatch) -> None:
    monkeypatch.setattr(calls, "SAMPLES_PAGE", 2)
    sample = msgspec.convert({"seq": 1, "attempt": 1, "worker_id": "w1", "iteration": 1, "total": 3, "loss": None,
                              "metrics": {}, "at": utcnow().isoformat()}, ProgressSample, strict=False)
    pages = [ProgressHistory(job_id=JOB, samples=[sample, sample], next_since=7),
             ProgressHistory(job_id=JOB, samples=[sample], next_since=8)]
    asked, found = drive(calls.logs(JOB), pages)
    assert len(found) == 3 and asked[1].params[0] == ("since", 7)


# Following: cursors across connections

def frame(kind: str, **fields: Any) -> bytes:
    return msgspec.json.encode({"type": kind, **fields})


def progress(seq: int, iteration: int) -> bytes:
    data = JobProgress(job_id=JOB, attempt=1, worker_id="w1", iteration=iteration, at=utcnow())
    return frame("progress", stream="telemetry", seq=seq, id=JOB, data=data)


def event(seq: int, payload: ev.Event) -> bytes:
    return frame("event", stream="events", seq=seq, event_type=type(payload).__name__, event=payload)


def welcome(events: int = 100, telemetry: int = 200) -> bytes:
    return frame("welcome", role="viewer", positions={"events": events, "telemetry": telemetry}, ping_s=5.0)


def test_each_connection_resumes_after_what_was_seen_and_nothing_comes_twice() -> None:
    state = Follow(JOB)
    first = msgspec.json.decode(state.greet(welcome()))
    assert first == {"type": "subscribe", "topics": [f"job:{JOB}"], "resume": {"events": 0, "telemetry": 0}}
    assert state.silence_s == 15.0
    seen = [u.iteration for text in (progress(5, 1), progress(5, 1), progress(9, 2), progress(7, 9))
            for u in state.take(text)]
    assert seen == [1, 2]
    assert state.take(event(3, ev.JobStarted(job_id=JOB, attempt=1, worker_id="w1", started_at=utcnow()))) == []
    again = msgspec.json.decode(state.greet(welcome()))  # the connection dropped; a new one
    assert again["resume"] == {"events": 3, "telemetry": 9}
    assert [u.iteration for u in state.take(progress(9, 2)) + state.take(progress(11, 3))] == [3]


def test_live_only_gives_reports_from_now_on_and_still_sees_an_end_that_came_before() -> None:
    state = Follow(JOB, from_start=False)
    assert msgspec.json.decode(state.greet(welcome(10, 20)))["resume"] == {"events": 0, "telemetry": 20}
    assert state.take(progress(20, 1)) == [] and len(state.take(progress(21, 2))) == 1
    state.take(event(7, ev.JobStopped(job_id=JOB, attempt=1, stopped_at=utcnow())))
    assert state.over


def test_the_job_ends_at_its_final_event_once_the_replay_is_in() -> None:
    state = Follow(JOB)
    state.greet(welcome())
    retried = ev.JobFailed(job_id=JOB, attempt=1, error="x", will_retry=True, failed_at=utcnow())
    state.take(event(4, retried))
    assert not state.over
    state.take(event(6, ev.JobCompleted(job_id=JOB, attempt=2, completed_at=utcnow())))
    assert state.over and not state.done
    state.take(frame("subscribed", topics=[f"job:{JOB}"], replayed=2, truncated=[], positions={"events": 6}))
    assert state.done


def test_other_frames_are_passed_over_and_an_error_is_raised() -> None:
    state = Follow(JOB)
    state.greet(welcome())
    report = EpisodeReport(job_id=JOB, attempt=1, episode=2, score=4.0, at=utcnow())
    assert state.take(frame("episode", stream="telemetry", seq=3, id=JOB, data=report)) == [report]
    assert state.take(frame("ping", time="now")) == [] and state.take(frame("training_progress", x=1)) == []
    with pytest.raises(InvalidRequest, match="unknown topics"):
        state.take(frame("error", code=400, detail="unknown topics"))
    with pytest.raises(Unavailable, match="did not welcome"):
        Follow(JOB).greet(frame("pong"))


def test_catching_up_over_rest_keeps_to_the_cursor() -> None:
    state = Follow(JOB)
    state.greet(welcome())
    state.take(progress(5, 1))
    samples = [msgspec.convert({"seq": seq, "attempt": 1, "worker_id": "w1", "iteration": seq, "total": None,
                                "loss": None, "metrics": {}, "at": utcnow().isoformat()}, ProgressSample, strict=False)
               for seq in (5, 6)]
    caught = state.catch_up(samples)
    assert [(u.job_id, u.iteration) for u in caught] == [(JOB, 6)] and state.cursors["telemetry"] == 6


def episode_sample(seq: int, episode: int) -> EpisodeSample:
    return msgspec.convert({"seq": seq, "attempt": 1, "episode": episode, "score": 2.0 * episode, "figures": {},
                            "log": [{"move": 1}], "at": utcnow().isoformat()}, EpisodeSample, strict=False)


def test_catching_up_merges_progress_and_episodes_in_telemetry_order() -> None:
    # Both kinds share the telemetry cursor: taking the progress first would pass over the episodes between.
    state = Follow(JOB)
    state.greet(welcome())
    state.take(progress(5, 1))
    samples = [msgspec.convert({"seq": seq, "attempt": 1, "worker_id": "w1", "iteration": seq, "total": None,
                                "loss": None, "metrics": {}, "at": utcnow().isoformat()}, ProgressSample, strict=False)
               for seq in (6, 9)]
    caught = state.catch_up(samples, [episode_sample(4, 1), episode_sample(7, 2), episode_sample(8, 3)])
    assert [(type(u).__name__, u.job_id) for u in caught] == [("JobProgress", JOB), ("EpisodeReport", JOB),
                                                              ("EpisodeReport", JOB), ("JobProgress", JOB)]
    assert [u.episode for u in caught if isinstance(u, EpisodeReport)] == [2, 3] and caught[1].log == [{"move": 1}]
    assert state.cursors["telemetry"] == 9


def test_what_a_follow_reads_after_the_end_is_progress_then_episodes_after_the_cursor(monkeypatch) -> None:
    monkeypatch.setattr(calls, "EPISODES_PAGE", 1)
    pages = [ProgressHistory(job_id=JOB, samples=[], next_since=3),
             EpisodeHistory(job_id=JOB, episodes=[episode_sample(4, 1)], next_since=4),
             EpisodeHistory(job_id=JOB, episodes=[], next_since=4)]
    asked, (samples, episodes) = drive(calls.reported_after(JOB, 3), pages)
    assert [(a.path.rsplit("/", 1)[1], a.params[0]) for a in asked] == [("progress", ("since", 3)),
                                                                          ("episodes", ("since", 3)),
                                                                          ("episodes", ("since", 4))]
    assert samples == [] and [e.episode for e in episodes] == [1]


def test_a_revoked_token_ends_the_follow_and_other_closes_reconnect() -> None:
    assert isinstance(refused(4401, "the token was revoked"), Forbidden)
    assert isinstance(refused(4403, ""), Forbidden)
    assert refused(1001, "shutting down") is None and refused(4009, "slow") is None and refused(None, "") is None


def test_reconnecting_backs_off_and_gives_up_after_its_patience() -> None:
    retry = Reconnect(60)
    assert [retry.next_delay("x") for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    retry.connected()
    assert retry.next_delay("x") == 0.1
    with pytest.raises(Unavailable, match="within -1 s: refused"):
        Reconnect(-1).next_delay("refused")


def test_a_progress_bar_with_tqdm_and_none_without(monkeypatch, capsys) -> None:
    pytest.importorskip("tqdm", reason="tqdm is optional (stoker[client]); the bar is drawn only with it")
    bar = progress_bar(job_view())
    advance_bar(bar, JobProgress(job_id=JOB, attempt=1, worker_id="w1", iteration=4, at=utcnow()))
    advance_bar(bar, JobProgress(job_id=JOB, attempt=1, worker_id="w1", iteration=3, at=utcnow()))
    assert (bar.n, bar.total) == (4, 10)
    bar.close()
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert progress_bar(job_view()) is None
    advance_bar(None, JobProgress(job_id=JOB, attempt=1, worker_id="w1", iteration=4, at=utcnow()))
