"""Settings loading and the supervisor's restart backoff: pure pieces, no processes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from eventstore.config import CommonSettings, ConfigError, load_settings
from eventstore.server import ServerSpec
from ops.supervisor import next_backoff


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


def test_single_node_config_syncs_every_write_and_cluster_config_routes(tmp_path: Path) -> None:
    single = ServerSpec(store_dir=tmp_path, port=1, http_port=2).config()
    assert "sync_interval: always" in single and "cluster" not in single
    node = ServerSpec(store_dir=tmp_path, port=1, http_port=2, cluster_port=3, routes=[3, 4, 5], name="n0").config()
    assert "sync_interval" not in node and "nats-route://127.0.0.1:4" in node and 'server_name: "n0"' in node
