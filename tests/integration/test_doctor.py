"""`stoker doctor` on what needs no running platform: a full disk (a tiny tmpfs), a port someone else holds,
`--fix` of a data dir others may read, and `stoker --check-deps`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.server import free_port
from ops import joined as membership
from tests.conftest import POSTGRES_URL
from tests.integration.test_join_tokens import ControlPlane
from tests.integration.test_join_tokens import plane as plane  # the fixture

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], data_dir: Path, **env: str) -> tuple[int, dict]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    done = subprocess.run([sys.executable, "-m", "ops", *args], capture_output=True, text=True, timeout=120,
                          env={**clean, "STOKER_DATA_DIR": str(data_dir), **env}, cwd=ROOT)
    report = json.loads(done.stdout)
    assert report["exit_code"] == done.returncode, done.stderr
    return done.returncode, {c["id"]: c for c in report["checks"]}


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards (skips where mounting is not allowed)."""
    where = tmp_path / "tiny"
    where.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_a_full_data_dir_fails_the_data_dir_check(tiny_filesystem: Path) -> None:
    with contextlib.suppress(OSError), (tiny_filesystem / "filler").open("wb") as out:
        for _ in range(64):  # 64 blocks of 64 KiB: more than the filesystem holds
            out.write(b"\0" * 65536)
            out.flush()
    code, checks = run(["doctor", "data-dir", "--json"], tiny_filesystem)
    assert code == 2 and checks["data-dir"]["severity"] == "failure", checks
    assert "free" in checks["data-dir"]["evidence"] and "No space" in checks["data-dir"]["evidence"]


def test_a_port_held_by_another_process_is_named(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        code, checks = run(["doctor", "ports", "--json"], tmp_path, STOKER_GATEWAY_PORT=str(port))
    assert code == 2 and checks["ports"]["severity"] == "failure", checks
    assert f"gateway 127.0.0.1:{port} is held by pid {os.getpid()}" in checks["ports"]["evidence"]
    assert f"kill {os.getpid()}" in checks["ports"]["fix"]


def test_fix_makes_the_data_dir_private_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    code, checks = run(["doctor", "data-dir", "--json"], data)
    assert code == 1 and "chmod 700" in checks["data-dir"]["fix"]
    code, checks = run(["doctor", "data-dir", "--json", "--fix"], data)
    assert code == 0 and checks["data-dir"]["fixed"] == f"chmod 700 {data}"
    assert data.stat().st_mode & 0o777 == 0o700


def test_check_deps_runs_the_dependency_subset(tmp_path: Path) -> None:
    code, checks = run(["--check-deps", "--json"], tmp_path)
    assert list(checks) == ["python", "packages", "nats-server", "gpu"]
    assert code == 0, checks


async def test_a_hanging_or_broken_probe_is_a_failure_that_says_so(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from eventstore.config import CommonSettings
    from ops import doctor

    released = threading.Event()

    def hang(_ctx: doctor.Context) -> None:
        released.wait(30)

    def broken(_ctx: doctor.Context) -> None:
        raise RuntimeError("probe exploded")

    monkeypatch.setitem(doctor.PROBES, "gpu", hang)
    monkeypatch.setitem(doctor.PROBES, "postgres", broken)
    try:
        checks = await doctor.run_checks(["python", "gpu", "postgres"], doctor.Context(CommonSettings(
            data_dir=str(tmp_path))), timeout=0.2)
    finally:
        released.set()
    assert [(c.id, c.severity) for c in checks] == [("python", "ok"), ("gpu", "failure"), ("postgres", "failure")]
    assert "did not finish within 0.8 s" in checks[1].evidence
    assert "RuntimeError: probe exploded" in checks[2].evidence


@pytest.mark.postgres
def test_postgres_when_configured(tmp_path: Path) -> None:
    code, checks = run(["doctor", "postgres", "--json"], tmp_path, STOKER_DATABASE_URL=POSTGRES_URL)
    if checks["postgres"]["severity"] == "failure" and "refused" in checks["postgres"]["evidence"].lower():
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {checks['postgres']['evidence']}")
    assert code == 0 and "answers (PostgreSQL" in checks["postgres"]["evidence"], checks
    code, checks = run(["doctor", "postgres", "--json"], tmp_path,
                       STOKER_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    assert code == 2 and checks["postgres"]["severity"] == "failure", checks


async def test_a_joined_worker_checks_the_control_plane(plane: ControlPlane, tmp_path: Path) -> None:
    machine = tmp_path / "machine-b"
    await membership.join(machine, await plane.token(), "host-b")
    code, checks = await asyncio.to_thread(run, ["doctor", "control-plane", "nats", "clock", "--json"], machine)
    assert checks["control-plane"]["severity"] == "ok" and "worker host-b" in checks["control-plane"]["evidence"]
    assert checks["nats"]["severity"] == "skipped"
    assert checks["clock"]["severity"] == "ok" and "JetStream" in checks["clock"]["evidence"], checks["clock"]
    assert code == 0
    record = machine / "join" / "joined.json"  # the platform moved away: nothing answers where it was
    record.write_text(record.read_text().replace(plane.server.url, f"tls://127.0.0.1:{free_port()}"))
    code, checks = await asyncio.to_thread(run, ["doctor", "control-plane", "--json"], machine)
    assert code == 2 and checks["control-plane"]["severity"] == "failure", checks
