"""`stoker service`: systemd accepts the unit, a dry run changes nothing, uninstall removes exactly what install
wrote, sd_notify reaches a real socket, and (where PID 1 is systemd) a killed service is started again."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from contracts.events import Gpu
from eventstore.sdnotify import Notifier
from ops.cli import main
from ops.install import systemd
from ops.install.plan import Host, Request, ServiceSpec, build_plan
from tests.notify_listener import NotifyListener

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` with its mode and content digest."""
    out = {}
    for path in sorted(root.rglob("*")):
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (path.stat().st_mode, content)
    return out


def stoker(home: Path, *args: str, path: str | None = None) -> Result:
    """The CLI with HOME at `home` (and, with `path`, a PATH without the service managers)."""
    env = {"HOME": str(home), "XDG_CONFIG_HOME": None, "XDG_DATA_HOME": None, "STOKER_DATA_DIR": None,
           "STOKER_CONFIG": None}
    if path is not None:
        env["PATH"] = path
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with something of the user's own in ~/.config, which must survive everything."""
    (tmp_path / "home" / ".config").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "theirs.conf").write_text("keep me\n")
    return tmp_path / "home"


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (the `systemd` package)")
@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_systemd_analyze_verify_accepts_the_generated_unit(tmp_path: Path, system: bool) -> None:
    data = tmp_path / "data dir 100%"  # a space and a specifier character: both must be escaped right
    data.mkdir()
    host = Host(target="linux", python=sys.executable, home=str(tmp_path), user="root",
                gpus=(Gpu(index=0, name="NVIDIA H200", memory_mb=143771),), groups=("video", "render"))
    unit = build_plan(Request(data_dir=str(data), system=system), host).files[0]
    path = tmp_path / Path(unit.path).name
    path.write_text(unit.content)
    runtime = tmp_path / "runtime"  # a user manager's runtime dir, which `--user verify` needs
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    done = subprocess.run([SYSTEMD_ANALYZE, *([] if system else ["--user"]), "verify", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), unit.content


def test_a_dry_run_prints_every_file_and_command_and_changes_nothing(tmp_path: Path, home: Path) -> None:
    before = snapshot(tmp_path)
    data = tmp_path / "data"
    for args in ([], ["--role", "worker", "--nats", "nats://cp.example:4222"], ["--system"],
                 ["--target", "macos"], ["--target", "windows"]):
        result = stoker(home, "--data-dir", str(data), "service", "install", "--dry-run", *args)
        assert result.exit_code == 0, result.output
        assert "would write" in result.output and "would run:" in result.output
    assert snapshot(tmp_path) == before and not data.exists()
    result = stoker(home, "--data-dir", str(data), "service", "install", "--dry-run")
    assert f"would write {home}/.config/systemd/user/stoker.service (mode 0644):" in result.output
    assert "    | Type=notify" in result.output
    assert "would run: systemctl --user enable --now stoker.service" in result.output


def test_install_then_uninstall_without_systemctl_removes_exactly_what_was_written(tmp_path: Path,
                                                                                   home: Path) -> None:
    empty_bin = tmp_path / "bin"  # no systemctl, no loginctl: the commands are said, not run
    empty_bin.mkdir()
    before = snapshot(tmp_path)
    data = tmp_path / "data"
    result = stoker(home, "--data-dir", str(data), "service", "install", path=str(empty_bin))
    assert result.exit_code == 0, result.output
    assert "not run (systemctl not found)" in result.output
    unit = home / ".config" / "systemd" / "user" / "stoker.service"
    assert "Type=notify" in unit.read_text() and (data / "service" / "manifest.json").exists()
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    again = stoker(home, "--data-dir", str(data), "service", "install", path=str(empty_bin))
    assert again.exit_code == 1 and "installed for this data dir already" in again.output
    status = stoker(home, "--data-dir", str(data), "service", "status", path=str(empty_bin))
    assert "installed: user unit stoker.service" in status.output and "systemctl is not here" in status.output
    result = stoker(home, "--data-dir", str(data), "service", "uninstall", path=str(empty_bin))
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path) == before
    missing = stoker(home, "--data-dir", str(data), "service", "status", path=str(empty_bin))
    assert missing.exit_code == 1 and "no service is installed" in missing.output


def test_uninstall_keeps_the_data_and_a_file_changed_since_the_install_and_purge_removes_the_data(
        tmp_path: Path, home: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.keep").write_text("the platform's data\n")
    assert stoker(home, "--data-dir", str(data), "service", "install", path=str(empty_bin)).exit_code == 0
    unit = home / ".config" / "systemd" / "user" / "stoker.service"
    unit.write_text(unit.read_text() + "# the user's own change\n")
    result = stoker(home, "--data-dir", str(data), "service", "uninstall", path=str(empty_bin))
    assert "changed since the install: left in place" in result.output
    assert unit.exists() and (data / "events.keep").exists() and not (data / "service").exists()
    unit.unlink()
    assert stoker(home, "--data-dir", str(data), "service", "install", path=str(empty_bin)).exit_code == 0
    result = stoker(home, "--data-dir", str(data), "service", "uninstall", "--purge", path=str(empty_bin))
    assert result.exit_code == 0 and not data.exists() and not unit.exists()


def test_a_worker_install_needs_a_joined_data_dir_or_a_nats_url(tmp_path: Path, home: Path) -> None:
    result = stoker(home, "--data-dir", str(tmp_path / "data"), "service", "install", "--role", "worker", "--dry-run")
    assert result.exit_code == 1 and "has not joined a platform" in result.output


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract", "path"])
async def test_sd_notify_reaches_a_real_datagram_socket(tmp_path: Path, abstract: bool) -> None:
    listener = NotifyListener(None if abstract else str(tmp_path / "notify"))
    try:
        notifier = Notifier(listener.name, watchdog_s=0.05)
        assert notifier.ready("up: the gateway's health answers")
        first = listener.wait_for("READY", "1", timeout=10)
        assert first.fields["STATUS"] == "up: the gateway's health answers" and first.pid == os.getpid()
        task = notifier.start_watchdog()
        try:
            deadline = time.monotonic() + 10
            while sum("WATCHDOG" in n.fields for n in listener.notices) < 3 and time.monotonic() < deadline:
                await asyncio.to_thread(listener.receive, 1.0)
        finally:
            task.cancel()
        assert sum(n.fields.get("WATCHDOG") == "1" for n in listener.notices) >= 3
        assert notifier.stopping() and listener.wait_for("STOPPING", "1", timeout=10)
    finally:
        listener.close()
    assert Notifier(listener.name).ready() is False  # nobody listens any more: said, not raised


def _systemd_user_manager() -> str | None:
    """Why a real user manager cannot be used here, or None when it can."""
    try:
        if Path("/proc/1/comm").read_text().strip() != "systemd":
            return "PID 1 is not systemd (a container): the dry-run and `systemd-analyze verify` tests cover the unit"
    except OSError:
        return "no /proc/1/comm"
    done = subprocess.run(["systemctl", "--user", "is-system-running"], capture_output=True, text=True, timeout=30)
    if done.stdout.strip() not in ("running", "degraded"):
        return f"no systemd user manager for this user ({done.stdout.strip() or done.stderr.strip()})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_systemd_user_manager() is not None, reason=str(_systemd_user_manager()))
def test_systemd_restarts_the_unit_after_sigkill(tmp_path: Path) -> None:
    # The generated unit (Type=notify, Restart=always), running a tiny process that says READY=1 as stoker does.
    script = ("import time\nfrom eventstore.sdnotify import Notifier\n"
              "Notifier.from_environment().ready('up')\ntime.sleep(600)")
    name = f"stoker-restart-test-{os.getpid()}"
    spec = ServiceSpec(name=name, description="stoker restart test", argv=(sys.executable, "-c", script),
                       env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])}, data_dir=str(tmp_path),
                       log_dir=str(tmp_path), system=False, start_timeout_s=60, stop_timeout_s=10)
    unit_dir = Path(systemd.unit_dir(Host(target="linux", python="", home=str(Path.home()), user=""), False))
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / f"{name}.service"
    unit.write_text(systemd.unit(spec))

    def main_pid() -> int:
        out = subprocess.run(["systemctl", "--user", "show", "-p", "MainPID", "--value", unit.name],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return int(out or 0)

    def wait_pid(other_than: int) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            active = subprocess.run(["systemctl", "--user", "is-active", unit.name], capture_output=True,
                                    text=True, timeout=30).stdout.strip()
            pid = main_pid()
            if active == "active" and pid not in (0, other_than):
                return pid
            time.sleep(0.5)
        raise AssertionError(f"{unit.name} did not come up (MainPID {main_pid()})")

    try:
        subprocess.run(["systemctl", "--user", "daemon-reload"], check=True, timeout=30)
        subprocess.run(["systemctl", "--user", "start", unit.name], check=True, timeout=90)
        first = wait_pid(0)
        os.kill(first, 9)
        assert wait_pid(first) != first
    finally:
        subprocess.run(["systemctl", "--user", "stop", unit.name], timeout=60, check=False)
        unit.unlink(missing_ok=True)
        subprocess.run(["systemctl", "--user", "daemon-reload"], timeout=30, check=False)
