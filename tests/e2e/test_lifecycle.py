"""`stoker up`'s own life: Ctrl-C through a closed pipe, a killed supervisor, a second `up`, a taken gateway port,
a killed nats-server. Afterwards no process of the platform may be left."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from eventstore.server import free_port
from ops.runstate import read_state
from tests.e2e.conftest import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Platform,
    _ready,
    start_platform,
    stop_platform,
    wait_until,
)
from tests.e2e.test_platform import checkpoints, stoker, timeline, wait_status

pytestmark = pytest.mark.slow
GONE_TIMEOUT_S = 120.0  # a killed supervisor's children wait for each other, as in a normal stop


def up_command(data_dir: Path, gateway_port: int) -> tuple[list[str], dict[str, str]]:
    """`stoker up` on `data_dir` with free ports, and its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update(STOKER_DATA_DIR=str(data_dir), STOKER_GATEWAY_PORT=str(gateway_port), STOKER_LOG_FORMAT="json")
    return [sys.executable, "-m", "ops", "up", "--port", str(free_port())], env


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every process that runs for this data dir (they all inherit STOKER_DATA_DIR; nats-server from its keeper)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("STOKER_DATA_DIR") == str(data_dir) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def family(pid: int) -> list[psutil.Process]:
    """A process and everything under it."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def assert_all_gone(processes: list[psutil.Process], data_dir: Path, timeout: float = GONE_TIMEOUT_S) -> None:
    """Every one of `processes` ends within `timeout` (none lingers as an orphan or zombie); else kill and fail."""
    _gone, alive = psutil.wait_procs(processes, timeout=timeout)
    alive = [p for p in alive if _running(p)] + [p for p in processes_of(data_dir) if p not in alive]
    if alive:
        described = [f"{p.pid} {' '.join(_cmdline(p))[:100]}" for p in alive]
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        pytest.fail("left running: " + "; ".join(described))


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return ["?"]


def read_until(stream, marker: str, timeout: float) -> list[str]:
    """Lines of `stream` up to the one containing `marker` (read in a thread that then stops reading)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            lines.put(line)
            if marker in line:
                return
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {marker!r} within {timeout:g} s:\n{''.join(seen)}")
        if line is None:
            pytest.fail(f"output ended before {marker!r}:\n{''.join(seen)}")
        seen.append(line)
        if marker in line:
            return seen


def run_briefly(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a command that should end by itself; if it does not, kill everything it started and fail."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = family(process.pid)
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.kill()
        process.communicate()
        pytest.fail(f"{' '.join(argv[2:])} was still running after {timeout:g} s")
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_ctrl_c_through_a_closed_pipe_stops_every_process(tmp_path: Path, signum: signal.Signals) -> None:
    port = free_port()
    argv, env = up_command(tmp_path, port)
    # `stoker up 2>&1 | tee up.log`, then Ctrl-C: the reader dies with the signal, the pipe is closed.
    process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    members: list[psutil.Process] = []
    try:
        read_until(process.stdout, "stoker is up", START_TIMEOUT_S)
        # The banner comes once health answers (it used to come seconds before anything listened).
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10).status_code == 200
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), START_TIMEOUT_S, "health")
        members = family(process.pid)
        assert any("services.trainer" in " ".join(_cmdline(p)) for p in members)
        process.stdout.close()
        # What the terminal sends to its foreground group on Ctrl-C, or when it is closed.
        os.killpg(process.pid, signum)
        assert_all_gone(members, tmp_path, STOP_TIMEOUT_S + 30)
        assert process.wait(10) in (0, 1)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        for member in members:
            with contextlib.suppress(psutil.Error):
                member.kill()
    status = run_briefly([sys.executable, "-m", "ops", "--json", "status"], env, tmp_path, 60)
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False, status


def test_a_killed_supervisor_takes_everything_with_it_and_the_job_is_requeued(tmp_path: Path) -> None:
    first = start_platform(tmp_path)
    members: list[psutil.Process] = []
    try:
        job = stoker(first, "submit", "train", "sleep", "--iterations", "400", "--param", "step_s=0.05",
                     "--param", "checkpoint_every=10")["job_id"]
        wait_until(lambda: any(c["iteration"] >= 10 for c in checkpoints(first, job)), 120,
                   "a checkpoint of the running job", first.log_tail)
        members = family(first.process.pid)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        assert_all_gone(members[1:], tmp_path)
    finally:
        for member in members:
            with contextlib.suppress(psutil.Error):
                member.kill()
        stop_platform(first)
    second = start_platform(tmp_path)
    try:
        events = timeline(second, job)
        requeued = [e["event"] for e in events if e["type"] == "JobRequeued"]
        assert requeued and requeued[0]["reason"] == "shutdown", events  # the worker stopped as on Ctrl-C
        assert wait_status(second, job, {"running", "completed"}, timeout=120)
    finally:
        stop_platform(second)


def test_a_service_that_cannot_start_is_named_with_why_and_up_exits_non_zero(tmp_path: Path) -> None:
    argv, env = up_command(tmp_path, free_port())
    env["STOKER_DATABASE_URL"] = "postgresql://stoker:hunter2@127.0.0.1:1/nothing"  # a read-model DB nobody runs
    result = run_briefly(argv, env, tmp_path, START_TIMEOUT_S + STOP_TIMEOUT_S)
    assert result.returncode == 1, result
    assert "stoker is up" not in result.stdout
    assert "projector failed to start (exit 1)" in result.stderr, result.stderr
    assert "cannot use the read-model database postgresql://stoker:***@127.0.0.1:1/nothing" in result.stderr
    assert "hunter2" not in result.stderr
    assert_all_gone([], tmp_path, 1)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One `stoker up` for the tests that only look at it, or break one of its processes."""
    platform = start_platform(tmp_path_factory.mktemp("lifecycle"))
    try:
        yield platform
    finally:
        stop_platform(platform)
        assert_all_gone([], platform.data_dir, 1)


def test_a_second_up_on_the_same_data_dir_is_refused(running: Platform) -> None:
    argv, env = up_command(running.data_dir, free_port())
    result = run_briefly(argv, env, running.data_dir, START_TIMEOUT_S)
    assert result.returncode != 0
    assert f"stoker is already running here (pid {running.process.pid}, gateway {running.url})" in result.stderr
    assert _ready(running.url)  # the first one goes on
    assert sum("nats-server" in p.name() for p in processes_of(running.data_dir)) == 1


def test_status_says_what_runs_from_the_data_dir(running: Platform) -> None:
    report = stoker(running, "status")
    assert report["running"] and report["state"] == "up" and report["pid"] == running.process.pid
    assert report["gateway"]["url"] == running.url and report["gateway"]["health"] == "ok"
    names = {p["name"]: p for p in report["processes"]}
    assert {"nats", "gateway", "scheduler", "monitor", "worker"} <= set(names)
    assert all(p["alive"] and p["pid"] for p in names.values())


def test_the_monitor_samples_this_machine_as_its_local_worker(running: Platform) -> None:
    workers = wait_until(lambda: stoker(running, "workers") or None, START_TIMEOUT_S, "the local worker listed")
    hosts = wait_until(lambda: stoker(running, "hosts") or None, START_TIMEOUT_S, "this machine sampled")
    hosts = hosts if isinstance(hosts, list) else [hosts]
    workers = workers if isinstance(workers, list) else [workers]
    assert [h["host_id"] for h in hosts] == [w["id"] for w in workers]
    assert hosts[0]["disks"][0]["path"] == str(running.data_dir.resolve())
    assert stoker(running, "alerts") == []


def test_a_killed_nats_server_comes_back_and_jobs_still_complete(running: Platform) -> None:
    def nats_servers() -> list[psutil.Process]:
        return [p for p in family(running.process.pid) if p.name() == "nats-server"]

    [old] = nats_servers()
    old.send_signal(signal.SIGKILL)
    wait_until(lambda: not _running(old), 30, "the killed nats-server to be reaped (no zombie)")
    wait_until(lambda: [p for p in nats_servers() if p.pid != old.pid], 60, "a new nats-server", running.log_tail)
    def nats_restarts() -> int:
        processes = (read_state(running.data_dir) or {}).get("processes", [])
        return next((p["restarts"] for p in processes if p["name"] == "nats"), 0)

    wait_until(lambda: nats_restarts() == 1, 30, "the restart to be counted")
    wait_until(lambda: _ready(running.url), START_TIMEOUT_S, "health after the restart", running.log_tail)
    job = stoker(running, "submit", "train", "noop", "--iterations", "3")["job_id"]
    assert wait_status(running, job, {"completed", "failed"}, timeout=120)["status"] == "completed"


def test_a_stop_while_nats_is_frozen_says_what_is_unknown(running: Platform) -> None:
    # Runs last on the module's platform: it stops it.
    [nats] = [p for p in family(running.process.pid) if p.name() == "nats-server"]
    members = family(running.process.pid)
    nats.suspend()  # alive but answering nothing: it cannot be brought back by a restart
    try:
        running.process.send_signal(signal.SIGINT)
        running.process.wait(STOP_TIMEOUT_S + 30)
    finally:
        with contextlib.suppress(psutil.Error):
            nats.resume()
    assert_all_gone(members, running.data_dir, 30)
    said = (running.data_dir / "stoker-up.log").read_text()
    assert "nothing was lost" not in said.split("stoker: stopping")[-1]
    assert "NATS was down during the stop" in said and running.process.returncode == 1


def test_a_taken_gateway_port_is_named_and_another_one_used(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        wanted = taken.getsockname()[1]
        argv, env = up_command(tmp_path, wanted)
        process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        members: list[psutil.Process] = []
        try:
            said = "".join(read_until(process.stdout, "Look inside", START_TIMEOUT_S))
            members = family(process.pid)
            assert f"port {wanted} is taken by " in said and f"(pid {os.getpid()})" in said, said
            state = json.loads((tmp_path / "supervisor.json").read_text())
            [gateway] = [item for item in state["listeners"] if item["name"] == "gateway"]
            assert gateway["wanted"] == wanted and gateway["port"] != wanted and f":{gateway['port']}" in said
            assert _ready(f"http://127.0.0.1:{gateway['port']}")
            assert json.loads((tmp_path / "ports.json").read_text())["gateway"]["port"] == gateway["port"]
            # `stoker firewall` plans for the port actually used (here nothing to open: it is on loopback).
            planned = run_briefly([sys.executable, "-m", "ops", "firewall", "plan", "--backend", "iptables",
                                   "--source", "10.0.0.0/24", "--no-record"], env, tmp_path, 60)
            assert (f"listeners from the running platform: gateway 127.0.0.1:{gateway['port']}" in planned.stdout
                    and planned.returncode == 0), planned
            process.send_signal(signal.SIGINT)
            assert process.wait(STOP_TIMEOUT_S + 30) == 0
        finally:
            with contextlib.suppress(OSError):
                process.kill()
            assert_all_gone(members, tmp_path, STOP_TIMEOUT_S + 30)
