"""Nothing said where NATS is and no platform runs from the data dir: one clear line, and no connection to
whatever listens on this machine's default port (it would be sent this data dir's admin credential)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore.config import CommonSettings
from eventstore.credentials import CredentialStore, operator_credential, write_secret
from eventstore.server import NoPlatform, resolve_nats_url
from ops import cli as cli_module
from ops.cli import Cli, main
from ops.commands.worker import worker_process

ROOT = Path(__file__).resolve().parents[2]
LINE = "no stoker platform runs from {}: start it with `stoker up`, or give --nats URL"


@pytest.fixture
def unconfigured(monkeypatch, tmp_path):
    """A data dir with an admin credential and no running platform; nothing names a NATS server; connecting
    anywhere fails the test."""
    for name in ("STOKER_NATS_URL", "STOKER_NATS_CREDENTIALS", "STOKER_NATS_CA", "STOKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    CredentialStore(tmp_path).ensure_control_plane()

    async def no_connection(url, *args, **kwargs):
        raise AssertionError(f"connected to {url}")

    monkeypatch.setattr(cli_module, "connect", no_connection)
    return tmp_path


def test_no_url_and_no_record_is_no_platform(tmp_path):
    with pytest.raises(NoPlatform) as caught:
        resolve_nats_url("", tmp_path)
    assert str(caught.value) == LINE.format(tmp_path)
    assert resolve_nats_url("nats://127.0.0.1:4999", tmp_path) == "nats://127.0.0.1:4999"


@pytest.mark.parametrize("args", [["submit", "train", "noop"], ["events", "tail", "-n", "1"], ["backup", "b.tgz"]])
def test_a_command_that_needs_nats_says_one_line_and_connects_nowhere(unconfigured, args):
    result = CliRunner().invoke(main, ["--data-dir", str(unconfigured), *args])
    assert result.exit_code == 1, result.output
    assert result.output == f"stoker: {LINE.format(unconfigured)}\n"


@pytest.mark.parametrize("args", [["worker"], ["run", "scheduler"]])
def test_worker_and_run_say_one_line_instead_of_starting(unconfigured, args):
    result = CliRunner().invoke(main, ["--data-dir", str(unconfigured), *args])
    assert result.exit_code == 1 and LINE.format(unconfigured) in result.output
    assert result.output.count("\n") == 1


def test_a_worker_given_a_url_needs_no_platform_here(unconfigured):
    cli = Cli(settings=CommonSettings(data_dir=str(unconfigured)))
    _argv, env = worker_process(cli, "nats://127.0.0.1:4999", None, (), None)
    assert env["STOKER_NATS_URL"] == "nats://127.0.0.1:4999"
    with pytest.raises(NoPlatform):
        worker_process(cli, None, None, (), None)


def test_the_operator_credential_is_the_configured_one_else_the_admin_seed(tmp_path):
    assert operator_credential(None, tmp_path) is None
    given = tmp_path / "mine.nk"
    assert operator_credential(given, tmp_path) == given
    admin = CredentialStore(tmp_path).role_path("admin")
    admin.parent.mkdir(parents=True)
    write_secret(admin, "seed")
    assert operator_credential(None, tmp_path) == admin
    assert operator_credential(given, tmp_path) == given


@pytest.mark.parametrize(("module", "name"), [("services.scheduler", "stoker-scheduler"),
                                            ("services.trainer", "stoker-trainer"), ("gateway", "stoker-gateway")])
def test_a_service_started_with_nowhere_to_connect_says_one_line(unconfigured, module, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env |= {"STOKER_DATA_DIR": str(unconfigured), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=120,
                          cwd=unconfigured)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"{name}: {LINE.format(unconfigured)}"], done.stderr
