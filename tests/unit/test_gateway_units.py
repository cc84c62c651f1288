"""Pure parts of the gateway: the bad-token brake, bearer parsing, cursors, run views, topics, tokens, queues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import events as ev
from contracts.errors import InvalidCommand
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore.readmodels.jobs import decode_cursor, encode_cursor
from gateway.auth import FailureLimiter, bearer
from gateway.hub import SLOW_CONSUMER, Subscriber
from gateway.live import EVENTS, TELEMETRY, Outgoing, event_topics, topic_role, valid_topic
from gateway.runs import (
    aggregate_episodes,
    by_episode,
    describe,
    episode_log,
    episode_row,
    episode_with_events,
    run_status,
    training_logs,
)
from gateway.schemas.jobs import JobView
from gateway.settings import GatewaySettings, load
from gateway.tokens import TokenRegistry, digest, role_allows

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(**changes) -> JobView:
    """A training job view."""
    fields = dict(id="J", kind="train", workload="2048", status="running", attempt=1, worker_id="w", priority=0,
                  params={}, max_iterations=10, episodes=None, checkpoint_of=None, gpus=0, labels=[],
                  idempotency_key=None, timeout_s=None, max_retries=0, submitted_at=T0, assigned_at=T0,
                  started_at=T0, finished_at=None, stop_requested=False, resumed_from=None, last_checkpoint=None,
                  last_checkpoint_iteration=None, checkpoints=0, requeues=0, error=None, result=None, updated_seq=1)
    return JobView(**{**fields, **changes})


def test_failure_limiter_blocks_past_the_limit_and_forgets_after_the_window() -> None:
    limiter = FailureLimiter(max_failures=3, window_s=60)
    for t in range(3):
        assert limiter.retry_after("a", now=100 + t) == 0
        limiter.fail("a", now=100 + t)
    assert limiter.retry_after("a", now=103) == pytest.approx(57)
    assert limiter.retry_after("b", now=103) == 0
    assert limiter.retry_after("a", now=161) == 0


@pytest.mark.parametrize(("header", "token"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None),
                                               ("Bearer", None), ("", None), (None, None)])
def test_bearer(header, token) -> None:
    assert bearer(header) == token


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor("2026-01-01T00:00:00Z", "J1")) == ("2026-01-01T00:00:00Z", "J1")
    for garbage in ("!!", "WzEsMl0", "e30"):
        with pytest.raises(InvalidCommand):
            decode_cursor(garbage)


@pytest.mark.parametrize(("status", "run"), [("queued", "pending"), ("assigned", "pending"), ("running", "running"),
                                             ("stopping", "running"), ("completed", "completed"),
                                             ("stopped", "stopped"), ("failed", "failed"), ("timed_out", "failed")])
def test_run_status_mapping(status, run) -> None:
    assert run_status(status) == run


def test_training_logs_keep_the_newest_report_of_each_iteration() -> None:
    samples = [JobProgress(job_id="J", attempt=a, worker_id="w", iteration=i, loss=loss, at=T0 + timedelta(seconds=i))
               for a, i, loss in [(1, 1, 4.0), (1, 2, 3.0), (1, 3, 9.0), (2, 3, 2.0), (2, 4, 1.0)]]
    logs = training_logs(job(), samples, T0 + timedelta(seconds=10))
    assert [(i.iteration, i.loss) for i in logs.iterations] == [(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]
    assert all(i.dqn_loss == i.loss for i in logs.iterations) and logs.map_id is None
    assert (logs.max_loss, logs.min_loss, logs.mean_loss, logs.final_loss) == (4.0, 1.0, 2.5, 1.0)
    assert logs.duration_seconds == 10 and logs.final_iteration == 4


def test_episode_statistics() -> None:
    reports = [EpisodeReport(job_id="J", attempt=1, episode=e, score=s, figures={"moves": m}, at=T0)
               for e, s, m in [(1, 2.0, 10.0), (2, 4.0, 30.0), (2, 6.0, 20.0)]]
    stats = aggregate_episodes(by_episode(reports), {"reached_2048": 0.5, "stopped": False, "episodes": 2})
    assert stats["score"] == describe([2.0, 6.0]) and stats["moves"].max == 20.0
    assert stats["score"].std == 2.0 and stats["score"].median == 4.0
    assert stats["reached_2048"] == 0.5 and "stopped" not in stats and "episodes" not in stats
    from_result = aggregate_episodes([], {"score": {"min": 1, "max": 2, "mean": 1.5, "median": 1.5, "std": 0.5},
                                          "episodes": 2})
    assert list(from_result) == ["score"] and from_result["score"].max == 2.0


def test_an_episode_in_the_earlier_apis_words() -> None:
    log = [{"move": 1, "action": "up", "reward": 4, "score": 4, "t": 0.5},
           {"move": 2, "action": "left", "reward": 0, "score": 4, "t": 1.5},
           {"move": 3, "type": "tile", "tile": 8, "score": 12}]
    report = EpisodeReport(job_id="J", attempt=1, episode=3, score=12.0, at=T0 + timedelta(seconds=2),
                           figures={"max_tile": 8.0, "moves": 3.0, "duration_s": 2.0, "episode_num": 99.0}, log=log)
    row = episode_row(report)
    assert row["episode_num"] == 3 and row["max_tile"] == 8.0 and row["score"] == 12.0  # the spec's keys win
    assert row["duration_seconds"] == 2.0 and row["timestamp"] == report.at and row["moves_logged"] == 3
    events = episode_with_events(report)["events"]
    assert [(e["type"], e["frame"]) for e in events] == [("tile", 3), ("episode_end", 3)]  # moves are frames
    detail = episode_log("T", report)
    assert detail.frames == 3 and detail.episode_num == 3 and detail.duration_seconds == 2.0
    assert [e["timestamp"] for e in detail.events] == [T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=1.5),
                                                       report.at]  # `t` is seconds into the episode
    assert [e["type"] for e in detail.events] == ["move", "move", "tile"] and detail.events[0]["action"] == "up"
    assert [(p.frame, p.value) for p in detail.timeline] == [(1, 4.0), (2, 4.0), (3, 12.0)]


@pytest.mark.parametrize(("topic", "ok"), [("jobs", True), ("workers", True), ("progress", True), ("events", True),
                                           ("job:01ABC", True), ("job:", False), ("job:a.b", False),
                                           ("worker:w1", False), ("", False)])
def test_topics(topic, ok) -> None:
    assert valid_topic(topic) is ok


def test_topic_roles_and_routing() -> None:
    assert topic_role("events") == "admin" and topic_role("job:1") == "viewer"
    assert event_topics("job", "J") == ("job:J", "jobs", "events")
    assert event_topics("token", "T") == ("events",)


def test_token_registry_folds_issue_expiry_and_revocation() -> None:
    registry = TokenRegistry()
    revoked = []
    registry.listeners.append(lambda record: revoked.append(record.token_id))
    registry.apply(ev.TokenIssued(token_id="A", role="operator", token_sha256=digest("secret-a"), issued_at=T0), 1)
    registry.apply(ev.TokenIssued(token_id="B", role="viewer", token_sha256=digest("secret-b"), issued_at=T0,
                                  expires_at=T0 + timedelta(hours=1)), 2)
    assert registry.authenticate("secret-a").role == "operator"
    assert registry.authenticate("secret-b", now=T0) is not None
    assert registry.authenticate("secret-b", now=T0 + timedelta(hours=2)) is None
    assert registry.authenticate("nope") is None
    registry.apply(ev.TokenRevoked(token_id="A", revoked_at=T0), 3)
    assert registry.authenticate("secret-a") is None and revoked == ["A"] and registry.position == 3
    assert role_allows("admin", "operator") and not role_allows("viewer", "operator")


def test_settings_bind_localhost_by_default() -> None:
    assert GatewaySettings().host == "127.0.0.1" and GatewaySettings().port == 8000
    assert load(env={"STOKER_GATEWAY_HOST": "0.0.0.0", "STOKER_GATEWAY_CORS_ORIGINS": '["http://a"]'}).gateway \
        == GatewaySettings(host="0.0.0.0", cors_origins=("http://a",))
    assert GatewaySettings(host="0.0.0.0").base_url == "http://127.0.0.1:8000"


def message(stream: str, seq: int) -> Outgoing:
    """A rendered message."""
    return Outgoing(stream, seq, ("jobs",), f"{stream}:{seq}")


async def test_subscriber_queues_in_order_without_duplicates_and_closes_when_full() -> None:
    sub = Subscriber(queue_size=3)
    for m in (message(EVENTS, 1), message(EVENTS, 1), message(TELEMETRY, 1), message(EVENTS, 2)):
        sub.offer(m)
    assert [sub.queue.get_nowait() for _ in range(3)] == ["events:1", "telemetry:1", "events:2"]
    sub.held = []
    sub.offer(message(EVENTS, 5))
    await sub.push_waiting(message(EVENTS, 3))
    sub.release_held()
    assert [sub.queue.get_nowait() for _ in range(2)] == ["events:3", "events:5"]
    for seq in range(10, 14):
        sub.offer(message(EVENTS, seq))
    assert sub.closing.is_set() and sub.close_code == SLOW_CONSUMER


def test_command_line_host_is_an_explicit_choice() -> None:
    from gateway.__main__ import parse

    assert parse([]) == {}
    assert parse(["--host", "0.0.0.0", "--port", "9000"]) == {"host": "0.0.0.0", "port": 9000}
