"""The monitor's alert decider: thresholds with hysteresis, pending periods, reminders, silence, stalled jobs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.telemetry import DiskFigures, GpuFigures, HostSample
from services.monitor import domain, jobwatch
from services.monitor.domain import Rule

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CPU = Rule(name="cpu_high", metric="cpu_percent", fire=80.0, clear=70.0, pending_s=300.0, repeat_s=600.0)
INSTANT = Rule(name="cpu_high", metric="cpu_percent", fire=80.0, clear=70.0)


def ids():
    counter = itertools.count(1)
    return lambda: f"a{next(counter)}"


def sample(cpu: float = 10.0, host: str = "h1", **extra) -> HostSample:
    return HostSample(host_id=host, cpu_percent=cpu, memory_percent=10.0, at=T0, **extra)


def run(values: list[tuple[float, float]], rule: Rule = CPU) -> tuple[list, domain.AlertBoard]:
    """Feed (seconds after T0, cpu) samples; return every event and the final board."""
    board, watch, new_id, out = domain.initial_state(), domain.Watch(), ids(), []
    for seconds, value in values:
        step = domain.decide_sample(board, watch, sample(value), [rule], T0 + timedelta(seconds=seconds), new_id)
        for event in step.events:
            board = domain.evolve(board, event)
        watch, out = step.watch, out + step.events
    return out, board


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.mark.parametrize(("values", "expected"), [
    ([(0, 50)], []),
    ([(0, 90)], []),  # breached, but pending for 300 s
    ([(0, 90), (299, 90)], []),
    ([(0, 90), (300, 90)], ["AlertRaised"]),
    ([(0, 90), (100, 79), (300, 90)], []),  # the breach was interrupted: pending starts again at 300
    ([(0, 90), (100, 79), (300, 90), (600, 95)], ["AlertRaised"]),
    ([(0, 90), (300, 90), (400, 75)], ["AlertRaised"]),  # between clear and fire: still firing (hysteresis)
    ([(0, 90), (300, 90), (400, 70)], ["AlertRaised", "AlertResolved"]),  # at clear: resolved
    ([(0, 90), (300, 90), (400, 60), (500, 90), (800, 90)], ["AlertRaised", "AlertResolved", "AlertRaised"]),
], ids=["calm", "pending", "not-yet", "fires", "interrupted", "fires-later", "hysteresis", "clears", "again"])
def test_threshold_pending_and_hysteresis(values, expected) -> None:
    events, _ = run(values)
    assert kinds(events) == expected


def test_a_raised_alert_says_what_and_a_resolution_names_it() -> None:
    events, board = run([(0, 90), (300, 91), (400, 50)])
    raised, resolved = events
    assert (raised.rule, raised.target_kind, raised.target, raised.value, raised.threshold) == (
        "cpu_high", "host", "h1", 91.0, 80.0)
    assert raised.raised_at == T0 + timedelta(seconds=300)
    assert resolved.alert_id == raised.alert_id and resolved.value == 50.0 and resolved.reason == "recovered"
    assert board.open == {}


def test_flapping_around_the_fire_threshold_raises_one_alert_not_twenty() -> None:
    values = [(i * 10, 81.0 if i % 2 else 79.0) for i in range(40)]
    events, board = run(values, INSTANT)
    assert kinds(events) == ["AlertRaised"]
    assert list(board.open) == ["cpu_high:h1"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=60))
def test_raises_and_resolves_alternate_and_follow_the_thresholds(cpus: list[float]) -> None:
    events, board = run([(i * 60, v) for i, v in enumerate(cpus)], INSTANT)
    assert kinds(events) == ["AlertRaised", "AlertResolved"] * (len(events) // 2) + ["AlertRaised"] * (len(events) % 2)
    assert all(e.value > 80.0 for e in events if isinstance(e, ev.AlertRaised))
    assert all(e.value <= 70.0 for e in events if isinstance(e, ev.AlertResolved))
    # Hysteresis: between two raises the value went to the clear threshold or below.
    assert len([e for e in events if isinstance(e, ev.AlertRaised)]) <= 1 + sum(1 for v in cpus if v <= 70.0)
    assert bool(board.open) == (len(events) % 2 == 1)


def test_an_open_alert_is_announced_again_after_repeat_s_not_appended_again() -> None:
    board, watch, new_id = domain.initial_state(), domain.Watch(), ids()
    reminders = []
    for seconds in (0, 300, 600, 899, 900, 1500):
        step = domain.decide_sample(board, watch, sample(95), [CPU], T0 + timedelta(seconds=seconds), new_id)
        for event in step.events:
            board = domain.evolve(board, event)
        watch, reminders = step.watch, reminders + [(seconds, r.alert_id) for r in step.reminders]
    assert reminders == [(900, "a1"), (1500, "a1")]


def test_missing_data_is_its_own_alert_and_never_a_recovery() -> None:
    board, new_id = domain.initial_state(), ids()
    step = domain.decide_sample(board, domain.Watch(), sample(95), [INSTANT], T0, new_id)
    for event in step.events:
        board = domain.evolve(board, event)
    assert domain.decide_silence(board, step.watch, T0 + timedelta(seconds=59), 60.0, new_id) == []
    silent = domain.decide_silence(board, step.watch, T0 + timedelta(seconds=60), 60.0, new_id)
    assert [(e.rule, e.target, e.value) for e in silent] == [("host_silent", "h1", None)]
    board = domain.evolve(board, silent[0])
    assert set(board.open) == {"cpu_high:h1", "host_silent:h1"}  # the CPU alert is not resolved by silence
    assert domain.decide_silence(board, step.watch, T0 + timedelta(seconds=600), 60.0, new_id) == []  # once
    back = domain.decide_sample(board, step.watch, sample(95), [INSTANT], T0 + timedelta(seconds=700), new_id)
    assert [(type(e).__name__, e.alert_id, e.reason) for e in back.events] == [
        ("AlertResolved", silent[0].alert_id, "data_back")]


@pytest.mark.parametrize(("rule", "extra", "fires"), [
    (Rule(name="disk_full", metric="disk_percent", fire=90, clear=88),
     {"disks": (DiskFigures(path="/a", percent=50, free_bytes=1, total_bytes=2),
                DiskFigures(path="/b", percent=95, free_bytes=1, total_bytes=2))}, True),
    (Rule(name="disk_filling", metric="disk_full_in_h", fire=8, clear=12, direction="below"),
     {"disks": (DiskFigures(path="/a", percent=50, free_bytes=1, total_bytes=2, full_in_h=3.0),)}, True),
    (Rule(name="disk_filling", metric="disk_full_in_h", fire=8, clear=12, direction="below"),
     {"disks": (DiskFigures(path="/a", percent=50, free_bytes=1, total_bytes=2),)}, False),
    (Rule(name="gpu_hot", metric="gpu_temperature_c", fire=85, clear=80),
     {"gpus": (GpuFigures(index=0, temperature_c=90.0),)}, True),
    (Rule(name="gpu_hot", metric="gpu_temperature_c", fire=85, clear=80), {}, False),  # no GPU: nothing
    (Rule(name="gpu_xid", metric="gpu_xid_errors", fire=0, clear=0), {"gpus": (GpuFigures(index=0, xid_errors=1),)},
     True),
    (Rule(name="gpu_xid", metric="gpu_xid_errors", fire=0, clear=0), {"gpus": (GpuFigures(index=0),)}, False),
], ids=["worst-disk", "filling", "no-estimate", "gpu-hot", "no-gpu", "xid", "no-xid"])
def test_each_metric_reads_the_worst_disk_or_gpu(rule, extra, fires) -> None:
    step = domain.decide_sample(domain.initial_state(), domain.Watch(), sample(**extra), [rule], T0, ids())
    assert kinds(step.events) == (["AlertRaised"] if fires else [])


@pytest.mark.parametrize("bad", [
    {"metric": "nope", "fire": 1, "clear": 0},
    {"metric": "cpu_percent", "fire": 80, "clear": 90},
    {"metric": "disk_full_in_h", "fire": 8, "clear": 4, "direction": "below"},
    {"metric": "cpu_percent", "fire": 80, "clear": 70, "pending_s": -1},
])
def test_bad_rules_are_refused_with_a_reason(bad) -> None:
    with pytest.raises(msgspec.ValidationError, match="rule r"):
        msgspec.convert({"name": "r", **bad}, Rule)


def test_a_running_job_without_progress_stalls_and_progress_resolves_it() -> None:
    new_id, board = ids(), domain.initial_state()
    running = jobwatch.track_running({}, "w1", ["j1", "j2"], T0)
    progress = {"j2": T0 + timedelta(seconds=500)}
    at = T0 + timedelta(seconds=600)
    stalled = domain.decide_stalls(board, running, progress, at, 600.0, new_id)
    assert [(type(e).__name__, e.job_id, e.worker_id, e.last_progress_at) for e in stalled] == [
        ("JobStalled", "j1", "w1", None)]
    board = domain.evolve(board, stalled[0])
    assert domain.decide_stalls(board, running, progress, at + timedelta(seconds=5), 600.0, new_id) == []
    progress["j1"] = at + timedelta(seconds=10)
    resumed = domain.decide_stalls(board, running, progress, at + timedelta(seconds=11), 600.0, new_id)
    assert [(e.alert_id, e.reason) for e in resumed] == [(stalled[0].alert_id, "progress")]


def test_a_stall_ends_with_the_job_and_silent_workers_run_nothing() -> None:
    new_id = ids()
    running = jobwatch.track_running({}, "w1", ["j1"], T0)
    stalled = domain.decide_stalls(domain.initial_state(), running, {}, T0 + timedelta(hours=1), 60, new_id)
    board = domain.evolve(domain.initial_state(), stalled[0])
    running = jobwatch.track_running(running, "w1", [], T0 + timedelta(hours=1))
    ended = domain.decide_stalls(board, running, {}, T0 + timedelta(hours=1), 60, new_id)
    assert [e.reason for e in ended] == ["job_ended"]
    running = jobwatch.track_running({}, "w2", ["j9"], T0)
    assert jobwatch.forget_silent_workers(running, {"w2": T0}, T0 + timedelta(seconds=59), 60) == running
    assert jobwatch.forget_silent_workers(running, {"w2": T0}, T0 + timedelta(seconds=60), 60) == {}


@pytest.mark.parametrize(("points", "free", "expected"), [
    ([(0, 100), (3600, 200), (7200, 300)], 1000, 10.0),  # 100 bytes an hour, 1000 free
    ([(0, 300), (3600, 200), (7200, 100)], 1000, None),  # emptying
    ([(0, 100), (3600, 100), (7200, 100)], 1000, None),  # steady
    ([(0, 100), (3600, 200)], 1000, None),  # too few points
])
def test_full_in_hours_is_a_linear_estimate(points, free, expected) -> None:
    assert domain.full_in_hours(points, free) == expected


def test_rules_come_from_the_monitor_section_of_stoker_toml(tmp_path) -> None:
    from eventstore.config import ConfigError, load_settings
    from services.monitor.settings import MonitorSettings

    path = tmp_path / "stoker.toml"
    path.write_text('[monitor]\ninterval_s = 5\n\n[[monitor.rules]]\nname = "cpu_high"\nmetric = "cpu_percent"\n'
                    'fire = 95\nclear = 90\npending_s = 60\n')
    settings = load_settings(MonitorSettings, "monitor", env={"STOKER_CONFIG": str(path)})
    assert settings.interval_s == 5.0
    assert settings.rules == (Rule(name="cpu_high", metric="cpu_percent", fire=95, clear=90, pending_s=60),)
    assert load_settings(MonitorSettings, "monitor", env={}).rules == domain.DEFAULT_RULES
    rule = '{"name": "%s", "metric": "cpu_percent", "fire": 1, "clear": 0}'
    for bad, message in ((f"[{rule % 'a'}, {rule % 'a'}]", "distinct"), (f"[{rule % 'host_silent'}]", "built in")):
        with pytest.raises(ConfigError, match=message):
            load_settings(MonitorSettings, "monitor", env={"STOKER_MONITOR_RULES": bad})


def test_notices_say_what_was_raised_and_resolved_in_every_webhook_format() -> None:
    import json

    from services.monitor.notices import backoff_s, notices_of, reminder_notice, webhook_body

    events, board = run([(0, 90), (300, 91)])
    resolved = ev.AlertResolved(alert_id=events[0].alert_id, value=40.0, resolved_at=T0)
    stalled = ev.JobStalled(alert_id="s1", job_id="j1", stall_after_s=600, raised_at=T0)
    before = {a.alert_id: a for a in board.open.values()}
    raised_notice, stall_notice, resolved_notice = notices_of([*events, stalled, resolved], before)
    assert (raised_notice.kind, raised_notice.rule, raised_notice.target, raised_notice.value) == (
        "raised", "cpu_high", "h1", 91.0)
    assert (stall_notice.rule, stall_notice.target) == ("job_stalled", "j1")
    assert (resolved_notice.kind, resolved_notice.rule, resolved_notice.target) == ("resolved", "cpu_high", "h1")
    body, kind = webhook_body(raised_notice, "json")
    assert kind == "application/json" and json.loads(body)["alert_id"] == raised_notice.alert_id
    assert json.loads(webhook_body(raised_notice, "slack")[0])["text"].startswith("[stoker] RAISED cpu_high on h1")
    assert "cpu_high" in json.loads(webhook_body(raised_notice, "discord")[0])["content"]
    text, plain = webhook_body(resolved_notice, "text")
    assert plain.startswith("text/plain") and b"RESOLVED cpu_high on h1" in text
    reminder = reminder_notice(domain.Reminder(alert_id="a1", rule="cpu_high", target="h1", value=95.0), T0)
    assert reminder.kind == "reminder" and reminder.value == 95.0
    assert [backoff_s(n, 2.0) for n in (1, 2, 3, 7, 8)] == [2.0, 4.0, 8.0, 60.0, 60.0]
