"""Settings loading, the supervisor's restart backoff and stop order, the data dir lock, `stoker status`."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from eventstore.config import CommonSettings, ConfigError, load_settings
from eventstore.lifeline import earlier_pids
from eventstore.server import ServerSpec
from eventstore.stores import shown_url
from ops.lock import AlreadyRunning, DataDirLock, already_running_message, holder
from ops.runstate import EXIT_NOT_HEALTHY, EXIT_NOT_RUNNING, EXIT_UP, exit_code, health_summary, render, summarize
from ops.supervisor import ProcessSpec, describe_exit, lifeline_waits, next_backoff


class DemoSettings(msgspec.Struct, frozen=True, kw_only=True):
    lease_ttl_s: float = 3.0
    labels: tuple[str, ...] = ("training",)
    enabled: bool = True


def test_defaults_then_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "stoker.toml"
    config.write_text('replicas = 3\n[demo]\nlease_ttl_s = 5.0\nlabels = ["a", "b"]\n')
    env = {"STOKER_CONFIG": str(config), "STOKER_DEMO_ENABLED": "false", "STOKER_DEMO_LABELS": '["gpu"]'}
    demo = load_settings(DemoSettings, "demo", env=env)
    assert demo == DemoSettings(lease_ttl_s=5.0, labels=("gpu",), enabled=False)
    common = load_settings(CommonSettings, env=env, overrides={"prefix": "other", "data_dir": None})
    assert common.replicas == 3 and common.prefix == "other"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[demo\].*lease_ttl_s"):
        load_settings(DemoSettings, "demo", env={"STOKER_DEMO_LEASE_TTL_S": "soon"})
    broken = tmp_path / "stoker.toml"
    broken.write_text("replicas = = 3")
    with pytest.raises(ConfigError, match=r"stoker\.toml"):
        load_settings(CommonSettings, env={"STOKER_CONFIG": str(broken)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(CommonSettings, env={"STOKER_CONFIG": str(tmp_path / "missing.toml")})


def test_data_dir_is_created(tmp_path: Path) -> None:
    settings = CommonSettings(data_dir=str(tmp_path / "deep" / "data"))
    assert settings.data_path.is_dir()
    assert settings.sqlite_path.parent == settings.data_path


@pytest.mark.parametrize(("previous", "uptime", "expected"), [
    (0.0, 0.1, 0.5), (0.5, 0.1, 1.0), (16.0, 2.0, 30.0), (30.0, 5.0, 30.0), (30.0, 61.0, 0.5),
])
def test_restart_backoff(previous: float, uptime: float, expected: float) -> None:
    assert next_backoff(previous, uptime) == expected


def test_every_node_syncs_every_write_and_cluster_config_routes(tmp_path: Path) -> None:
    # Clustered too: without it acked writes can be lost when every node loses power (nats-server issue 7564).
    single = ServerSpec(store_dir=tmp_path, port=1, http_port=2).config()
    assert "sync_interval: always" in single and "cluster" not in single
    node = ServerSpec(store_dir=tmp_path, port=1, http_port=2, cluster_port=3, routes=[3, 4, 5], name="n0").config()
    assert "sync_interval: always" in node and "nats-route://127.0.0.1:4" in node and 'server_name: "n0"' in node


def test_a_killed_supervisors_children_wait_as_long_as_a_normal_stop_would() -> None:
    specs = [ProcessSpec("worker", [], stop_rank=1, grace=60), ProcessSpec("gateway", [], stop_rank=4, grace=30),
             ProcessSpec("monitor", [], stop_rank=5, grace=30), ProcessSpec("firewall", [], stop_rank=5, grace=20),
             ProcessSpec("nats", [], stop_rank=99, grace=20)]
    assert lifeline_waits(specs, margin=10) == {"worker": 0.0, "gateway": 70.0, "monitor": 100.0,
                                                "firewall": 100.0, "nats": 130.0}
    state = {"processes": [{"name": "worker", "pid": 11, "stop_rank": 1}, {"name": "gateway", "pid": None,
                                                                           "stop_rank": 4},
                           {"name": "nats", "pid": 13, "stop_rank": 99}]}
    assert earlier_pids(state, 99) == [11] and earlier_pids(state, 1) == []


def test_exits_in_words() -> None:
    assert [describe_exit(c) for c in (None, 0, 3, -9, -15)] == [
        "running", "exit 0", "exit 3", "killed by SIGKILL", "killed by SIGTERM"]


def test_one_holder_per_data_dir(tmp_path: Path) -> None:
    assert holder(tmp_path) is None
    first = DataDirLock(tmp_path).acquire({"pid": 1234, "gateway": "http://127.0.0.1:8000"})
    try:
        assert holder(tmp_path) == {"pid": 1234, "gateway": "http://127.0.0.1:8000"}
        with pytest.raises(AlreadyRunning) as refused:
            DataDirLock(tmp_path).acquire({"pid": 99}, wait_s=0.1)
        assert refused.value.holder["pid"] == 1234
    finally:
        first.release()
    assert holder(tmp_path) is None
    DataDirLock(tmp_path).acquire({"pid": 5}).release()


def test_the_refusal_names_the_holder() -> None:
    info = {"pid": 42, "gateway": "http://127.0.0.1:8000"}
    assert already_running_message(info, True) == "stoker is already running here (pid 42, gateway http://127.0.0.1:8000)"
    assert "still stopping" in already_running_message(info, False)


def _health(code: int | None, status: str = "ok") -> object:
    body = {"status": "healthy" if status == "ok" else "unhealthy", "state": status, "nats": {"connected": True},
            "services": [
        {"name": "scheduler", "required": True, "up": status == "ok"}]}
    return lambda _url: (code, body if code else None, "" if code else "connection refused")


def test_status_of_a_data_dir(tmp_path: Path) -> None:
    nobody = summarize(tmp_path, None, None, lambda _pid: False, _health(None))
    assert exit_code(nobody) == EXIT_NOT_RUNNING and "nothing is running" in render(nobody)
    lock = {"pid": 10, "gateway": "http://127.0.0.1:8000", "nats": "nats://127.0.0.1:4222"}
    state = {"pid": 10, "state": "up", "processes": [{"name": "nats", "pid": 11, "state": "running", "restarts": 1,
                                                      "last_exit": "exit 137"},
                                                     {"name": "worker", "pid": 12, "state": "running"}]}
    up = summarize(tmp_path, lock, state, lambda pid: pid != 12, _health(200))
    assert exit_code(up) == EXIT_UP and up["gateway"]["summary"] == "ok"
    assert [(p["name"], p["alive"]) for p in up["processes"]] == [("nats", True), ("worker", False)]
    text = render(up)
    assert "stoker is up here (pid 10)" in text and "exit 137" in text and "gone" in text
    degraded = summarize(tmp_path, lock, state, lambda _pid: True, _health(503, "degraded"))
    assert exit_code(degraded) == EXIT_NOT_HEALTHY and "scheduler not answering" in degraded["gateway"]["summary"]
    orphaned = summarize(tmp_path, lock, state, lambda pid: pid != 10, _health(None))
    assert orphaned["state"] == "supervisor gone" and exit_code(orphaned) == EXIT_NOT_HEALTHY
    assert "not answering: connection refused" in render(orphaned)


def test_health_in_a_few_words() -> None:
    assert health_summary(None) == "no answer"
    body = {"status": "unhealthy", "state": "down", "nats": {"connected": False},
            "streams": [{"name": "E", "ok": False}],
            "store": {"ok": False}}
    assert health_summary(body) == "down: NATS not connected, stream E not ok, read-model store not ok"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://stoker:hunter2@db.lan:5432/stoker", "postgresql://stoker:***@db.lan:5432/stoker"),
    ("postgresql://stoker@db.lan/stoker", "postgresql://stoker@db.lan/stoker"),
    ("postgresql:///stoker", "postgresql:///stoker"),
])
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
