"""The service install plan and its generators (systemd, launchd, Windows): golden files and decisions."""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

import msgspec
import pytest

from contracts.events import Gpu
from ops.install import launchd, systemd, windows
from ops.install.plan import Host, InstallError, Request, build_plan, describe_command, service_argv

GOLDEN = Path(__file__).parent / "golden" / "service"
UPDATE = os.environ.get("STOKER_UPDATE_GOLDEN") == "1"  # rewrite the golden files after a deliberate change
H200 = Gpu(index=0, name="NVIDIA H200", memory_mb=143771)


def linux_host(**kw) -> Host:
    base = dict(target="linux", python="/opt/stoker/.venv/bin/python", home="/home/ada", user="ada", uid=1000)
    return Host(**{**base, **kw})


def matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with STOKER_UPDATE_GOLDEN=1 once, then review it"
    assert text == path.read_text(), f"{name} differs from its golden file (STOKER_UPDATE_GOLDEN=1 rewrites it)"


def file_named(plan, suffix: str) -> str:
    return next(f.content for f in plan.files if f.path.endswith(suffix))


def test_user_unit_of_the_control_plane_matches_its_golden_file() -> None:
    plan = build_plan(Request(data_dir="/home/ada/.local/share/stoker"), linux_host(gpus=(H200,)))
    matches_golden("stoker.user.service", file_named(plan, "stoker.service"))
    assert plan.files[0].path == "/home/ada/.config/systemd/user/stoker.service"


def test_system_unit_of_a_gpu_worker_matches_its_golden_file() -> None:
    host = linux_host(gpus=(H200,), groups=("video", "render"), joined=True)
    plan = build_plan(Request(role="worker", system=True, data_dir="/var/lib/stoker"), host)
    matches_golden("stoker-worker.system.service", file_named(plan, "stoker-worker.service"))
    assert plan.files[0].path == "/etc/systemd/system/stoker-worker.service"


def test_launch_agent_matches_its_golden_file_and_is_a_valid_plist() -> None:
    host = Host(target="macos", python="/Users/ada/stoker/.venv/bin/python", home="/Users/ada", user="ada", uid=501)
    plan = build_plan(Request(data_dir="/Users/ada/Library/Application Support/stoker"), host)
    text = file_named(plan, ".plist")
    matches_golden("local.stoker.plist", text)
    document = plistlib.loads(text.encode())
    assert document["KeepAlive"] is True and document["RunAtLoad"] is True
    assert document["StandardOutPath"].startswith("/Users/ada/Library/Application Support/stoker/logs/")
    assert [c.argv[:3] for c in plan.commands] == [("launchctl", "bootstrap", "gui/501")]
    assert plan.undo_before[0].argv == ("launchctl", "bootout", "gui/501/local.stoker")


def windows_plan():
    host = Host(target="windows", python=r"C:\stoker\.venv\Scripts\python.exe", home=r"C:\Users\ada", user="ada",
                base_python=r"C:\Program Files\Python311\python.exe", site_dirs=(r"C:\stoker\.venv\Lib\site-packages",),
                dll_dirs=(r"C:\stoker\.venv\Lib\site-packages\pywin32_system32", r"C:\Program Files\Python311"))
    return build_plan(Request(data_dir=r"C:\Users\ada\AppData\Local\stoker"), host)


def test_windows_service_definition_matches_its_golden_files() -> None:
    plan = windows_plan()
    launcher = file_named(plan, "stoker-service.py")
    matches_golden("stoker-service.py.txt", launcher)
    compile(launcher, "stoker-service.py", "exec")  # valid Python, whatever the paths written into it
    commands = "\n".join(describe_command(c.argv, "windows") for c in (*plan.commands, *plan.undo_before)) + "\n"
    matches_golden("windows-commands.txt", commands)


def test_windows_service_is_hosted_by_the_base_interpreter_and_restarts_after_5_10_30_s() -> None:
    plan = windows_plan()
    create = next(c.argv for c in plan.commands if c.argv[1] == "create")
    assert create[create.index("binPath=") + 1].startswith('"C:\\Program Files\\Python311\\python.exe" ')
    failure = next(c.argv for c in plan.commands if c.argv[1] == "failure")
    assert failure[failure.index("actions=") + 1] == "restart/5000/restart/10000/restart/30000"


@pytest.mark.parametrize(("word", "quoted"), [
    ("/usr/bin/python", "/usr/bin/python"),
    ("/home/a b/data", '"/home/a b/data"'),
    ("100%", '"100%%"'),
    ("$HOME", '"$$HOME"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("", '""'),
    ("a\nb", '"a\\nb"'),
])
def test_unit_words_are_quoted_and_escaped(word: str, quoted: str) -> None:
    assert systemd.quote(word) == quoted


def test_environment_values_keep_their_dollar_signs() -> None:
    assert systemd.quote("PASS=a$b 100%", command=False) == '"PASS=a$b 100%%"'


@pytest.mark.parametrize(("role", "nats", "tail"), [
    ("control-plane", "", ("up",)),
    ("worker", "", ("worker",)),
    ("worker", "nats://cp:4222", ("worker", "--nats", "nats://cp:4222")),
])
def test_the_role_decides_what_runs(role, nats, tail) -> None:
    argv = service_argv("/py", Request(role=role, data_dir="/d", nats_url=nats))
    assert argv == ("/py", "-m", "ops", "--data-dir", "/d", *tail)


@pytest.mark.parametrize(("request_", "host", "says"), [
    (Request(role="worker", data_dir="/d"), linux_host(), "has not joined a platform"),
    (Request(data_dir="/d", nats_url="nats://x:4222"), linux_host(), "--nats is for a worker"),
    (Request(data_dir="/d", system=True), Host(target="macos", python="/py", home="/h", user="u"), "macOS"),
])
def test_what_cannot_be_installed_says_why(request_, host, says) -> None:
    with pytest.raises(InstallError, match=says):
        build_plan(request_, host)


def test_a_user_unit_turns_linger_on_only_when_it_was_off_and_undoes_only_that() -> None:
    off = build_plan(Request(data_dir="/d"), linux_host(lingering=False))
    on = build_plan(Request(data_dir="/d"), linux_host(lingering=True))
    assert ("loginctl", "enable-linger", "ada") in [c.argv for c in off.commands]
    assert ("loginctl", "disable-linger", "ada") in [c.argv for c in off.undo_after]
    assert not any(c.argv[0] == "loginctl" for c in (*on.commands, *on.undo_after))


def test_a_system_unit_makes_its_account_only_when_missing_and_removes_it_only_on_purge() -> None:
    request = Request(system=True, data_dir="/var/lib/stoker")
    fresh = build_plan(request, linux_host(groups=("video",)))
    existing = build_plan(request, linux_host(groups=("video",), service_user_exists=True))
    useradd = next(c.argv for c in fresh.commands if c.argv[0] == "useradd")
    assert useradd[-3:] == ("--groups", "video", "stoker")
    assert [c.argv for c in fresh.purge] == [("userdel", "stoker")]
    assert not any(c.argv[0] == "useradd" for c in existing.commands) and existing.purge == ()
    assert not any(c.argv[0] == "loginctl" for c in fresh.commands)


def test_the_gpu_record_holds_what_was_seen_and_the_unit_points_the_worker_at_it() -> None:
    plan = build_plan(Request(data_dir="/d"), linux_host(gpus=(H200,)))
    record = next(f for f in plan.files if f.path == "/d/service/gpus.json")
    assert msgspec.json.decode(record.content, type=list[Gpu]) == [H200] and record.mode == 0o600
    assert "Environment=STOKER_TRAINER_EXPECTED_GPUS_FILE=/d/service/gpus.json" in file_named(plan, ".service")


def test_only_a_system_unit_on_a_gpu_host_orders_itself_after_nvidia_persistenced() -> None:
    spec = systemd.spec_for(Request(data_dir="/d"), linux_host(gpu_driver=True))
    system_spec = msgspec.structs.replace(spec, system=True, user="stoker")
    assert "After=network-online.target\n" in systemd.unit(spec)
    assert "After=network-online.target nvidia-persistenced.service" in systemd.unit(system_spec)
    assert "Wants=network-online.target nvidia-persistenced.service" in systemd.unit(system_spec)


def test_controls_follow_the_manager() -> None:
    user = build_plan(Request(data_dir="/d"), linux_host()).controls
    assert user["logs"][0][:4] == ("journalctl", "--user", "-u", "stoker.service")
    assert user["restart"] == (("systemctl", "--user", "restart", "stoker.service"),)
    assert windows_plan().controls["start"] == (("sc.exe", "start", "stoker"),)
    assert launchd.THROTTLE_S > 0 and windows.RESTART_DELAYS_MS == (5_000, 10_000, 30_000)
