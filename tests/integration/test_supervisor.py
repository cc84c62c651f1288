"""The supervisor and the lifeline with real processes: startup failures, restarts, reaping, a killed supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from eventstore import lifeline
from eventstore.server import NatsServer, ServerSpec, free_port
from ops.supervisor import LOCK_FD_ENV, Launch, ProcessSpec, Supervisor

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_process_that_exits_before_up_fails_the_start_and_is_not_restarted(tmp_path: Path) -> None:
    failing = ProcessSpec("gateway", [sys.executable, "-c", "print('address already in use'); raise SystemExit(2)"])
    supervisor = Supervisor([ProcessSpec("other", SLEEP, grace=5), failing], tmp_path)
    await supervisor.start()
    failed = await asyncio.wait_for(supervisor.startup_failure(), 30)
    assert failed.child.spec.name == "gateway" and failed.code == 2
    assert "address already in use" in "\n".join(failed.child.log_tail())
    await supervisor.stop()
    assert supervisor.child("gateway").restarts == 0
    assert supervisor.outcomes() == {"other": "clean", "gateway": "was down (exit 2)"}


async def test_after_up_a_crashed_process_is_restarted_reaped_and_counted(tmp_path: Path) -> None:
    restarted = asyncio.Event()
    supervisor = Supervisor([ProcessSpec("flaky", [sys.executable, "-c", "raise SystemExit(1)"])], tmp_path,
                            on_change=lambda: supervisor.child("flaky").restarts >= 2 and restarted.set())
    supervisor.mark_up()
    await supervisor.start()
    child = supervisor.child("flaky")
    first = child.process.pid
    await asyncio.wait_for(restarted.wait(), 30)
    assert gone(first)
    await supervisor.stop()
    assert child.snapshot()["state"] == "stopped"


def test_a_child_that_loses_its_supervisor_waits_for_those_that_stop_before_it(tmp_path: Path) -> None:
    earlier = subprocess.Popen(SLEEP)
    state = tmp_path / "supervisor.json"
    state.write_text(json.dumps({"processes": [{"name": "worker", "pid": earlier.pid, "stop_rank": 1}]}))
    read_fd, write_fd = lifeline.open_lifeline()
    env = {**os.environ, **lifeline.child_env(read_fd, state, rank=6, wait_s=60)}
    child = subprocess.Popen([sys.executable, "-c", "from eventstore import lifeline; import time; lifeline.watch(); "
                              "print('watching', flush=True); time.sleep(120)"], env=env, pass_fds=(read_fd,),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "watching"
        os.close(write_fd)  # the supervisor dies
        os.close(read_fd)
        time.sleep(1.0)
        assert child.poll() is None  # the worker still runs: the scheduler waits for it
        earlier.kill()
        earlier.wait()
        assert child.wait(30) == -signal.SIGTERM
    finally:
        for process in (earlier, child):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_keeper_stops_its_nats_server_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    node = NatsServer(ServerSpec(store_dir=tmp_path / "nats" / "jetstream", port=free_port(), http_port=free_port()))
    keeper = node.keeper_argv(tmp_path / "nats.log")
    script = ("import os, subprocess, sys, time\nfrom eventstore import lifeline\n"
              "r, w = lifeline.open_lifeline()\n"
              f"p = subprocess.Popen({keeper!r}, env={{**os.environ, **lifeline.child_env(r)}}, pass_fds=(r,),"
              " start_new_session=True)\n"
              "print(p.pid, flush=True)\ntime.sleep(120)\n")
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    keeper_pid = int(supervisor.stdout.readline())
    nats = wait_for(lambda: psutil.Process(keeper_pid).children(), 30, "nats-server under its keeper")[0]
    try:
        assert nats.name() == "nats-server"
        asyncio.run(node.wait_healthy(30, exited=lambda: None))
        supervisor.kill()
        supervisor.wait()
        wait_for(lambda: gone(keeper_pid) and gone(nats.pid), 30, "the keeper and nats-server to stop")
        assert "Server Exiting" in (tmp_path / "nats.log").read_text()  # a clean stop (SIGTERM), not a kill
    finally:
        for pid in (keeper_pid, nats.pid):
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_keeper_exits_when_its_nats_server_dies(tmp_path: Path) -> None:
    node = NatsServer(ServerSpec(store_dir=tmp_path / "nats" / "jetstream", port=free_port(), http_port=free_port()))
    keeper = subprocess.Popen(node.keeper_argv(tmp_path / "nats.log"))
    try:
        nats = wait_for(lambda: psutil.Process(keeper.pid).children(), 30, "nats-server under its keeper")[0]
        nats.send_signal(signal.SIGKILL)
        assert keeper.wait(30) == 128 + signal.SIGKILL
        assert gone(nats.pid)
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()


def test_launch_gives_each_child_its_lifeline_and_rank() -> None:
    launch = Launch(lifeline_fd=7, state_file=Path("/x/supervisor.json"), lock_fd=8)
    env = launch.env(ProcessSpec("scheduler", SLEEP, stop_rank=6), 70.0)
    assert env[lifeline.ENV_FD] == "7" and env[lifeline.ENV_RANK] == "6" and env[lifeline.ENV_WAIT] == "70"
    assert env[LOCK_FD_ENV] == "8" and launch.inherited == (7, 8)
    assert lifeline.ENV_STATE not in launch.env(ProcessSpec("worker", SLEEP, stop_rank=1), 0.0)
