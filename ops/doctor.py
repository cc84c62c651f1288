"""`stoker doctor`'s probes: each looks at one thing (a file, a port, a server) and hands the facts to
ops/doctor_domain.py, which says what they mean. They run in parallel, each within a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psutil

from eventstore.config import CommonSettings
from eventstore.server import NatsServerError, find_nats_server, read_record
from ops import doctor_domain as dd
from ops import doctor_nats, doctor_systemd
from ops import doctor_rules as rules
from ops.lock import holder as lock_holder

DISTRIBUTION = "stoker"
SLOW = {"gpu": 4.0}  # importing torch takes seconds on a loaded machine: a longer deadline


@dataclass
class Context:
    """What every probe may look at: the settings and where the data dir is (never created by a probe)."""

    settings: CommonSettings

    @property
    def data(self) -> Path:
        """The data dir."""
        return self.settings.data_location


async def run_checks(names: list[str], ctx: Context, timeout: float = 15.0, fix: bool = False) -> list[dd.Check]:
    """Run the named checks in parallel, each within its deadline; with `fix`, apply the safe fixes and look again."""
    done = await asyncio.to_thread(fix_data_dir, ctx.data) if fix and "data-dir" in names else []
    results = await asyncio.gather(*(_bounded(name, ctx, timeout * SLOW.get(name, 1.0)) for name in names))
    return [msgspec.structs.replace(c, fixed="; ".join(done)) if c.id == "data-dir" and done else c
            for c in results]


async def _bounded(name: str, ctx: Context, timeout: float) -> dd.Check:
    probe = PROBES[name]
    try:
        if asyncio.iscoroutinefunction(probe):
            return await asyncio.wait_for(probe(ctx), timeout)
        return await asyncio.wait_for(in_daemon_thread(probe, ctx), timeout)
    except TimeoutError:
        return dd.timed_out(name, timeout)
    except Exception as exc:  # one broken probe must not hide the others' answers
        return dd.crashed(name, f"{exc.__class__.__name__}: {exc}")


def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run a blocking probe in a daemon thread: one that hangs past its deadline does not hold up the exit
    (asyncio's executor threads would be joined at the end of `asyncio.run`)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(lambda: None if future.done() else outcome())

    def body() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:  # handed to the waiting coroutine
            settle(functools.partial(future.set_exception, exc))
        else:
            settle(lambda: future.set_result(value))

    threading.Thread(target=body, daemon=True, name=f"doctor-{getattr(fn, '__name__', 'probe')}").start()
    return future


# The dependency subset (`stoker --check-deps`).


def probe_python(_ctx: Context) -> dd.Check:
    """The running Python against the package's Requires-Python."""
    try:
        requires = importlib.metadata.metadata(DISTRIBUTION).get("Requires-Python")
    except importlib.metadata.PackageNotFoundError:
        requires = None
    return dd.python_check(".".join(map(str, sys.version_info[:3])), requires)


def installed_versions(requirements: list[str]) -> dict[str, str | None]:
    """The installed version of every distribution the requirement lines name (None: not installed)."""
    from packaging.requirements import InvalidRequirement, Requirement

    found: dict[str, str | None] = {}
    for text in requirements:
        try:
            name = Requirement(text).name
        except InvalidRequirement:
            continue
        try:
            found[dd.canonical(name)] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[dd.canonical(name)] = None
    return found


def probe_packages(_ctx: Context) -> dd.Check:
    """Each dependency stoker's metadata declares (pyproject's ranges), installed and in range."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return dd.Check(id="packages", severity="failure", evidence="stoker is not installed as a package here",
                        fix="pip install -e . (from a checkout) or pip install stoker")
    return dd.packages_check(requirements, installed_versions(requirements))


def probe_nats_server(_ctx: Context) -> dd.Check:
    """The nats-server binary stoker would run, and its `--version`."""
    try:
        path = find_nats_server()
    except NatsServerError as exc:
        return dd.nats_server_check(None, None, str(exc))
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return dd.nats_server_check(path, None, str(exc))
    return dd.nats_server_check(path, done.stdout or done.stderr, None)


def probe_gpu(_ctx: Context) -> dd.Check:
    """GPUs as torch and as NVML see them (each only when installed)."""
    torch_gpus, torch_note = None, ""
    if importlib.util.find_spec("torch") is not None:
        with warnings.catch_warnings():  # a torch without numpy says so on import: not this check's business
            warnings.simplefilter("ignore")
            import torch

        if torch.cuda.is_available():
            torch_gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            torch_gpus = []
            torch_note = "CUDA not available" + ("" if torch.version.cuda else ": a CPU-only build of torch")
    nvml_gpus, nvml_note = None, ""
    if importlib.util.find_spec("pynvml") is not None:
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            nvml_gpus, nvml_note = [], f"NVML cannot start: {exc}"
        else:
            try:
                nvml_gpus = [_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
                             for i in range(pynvml.nvmlDeviceGetCount())]
            finally:
                pynvml.nvmlShutdown()
    return dd.gpu_check(torch_gpus, nvml_gpus, torch_note, nvml_note)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# The machine and the platform.


def data_dir_facts(path: Path) -> rules.DataDirFacts:
    """Look at the data dir without changing it (a probe file is written and removed to test writing)."""
    if not path.exists():
        return rules.DataDirFacts(path=str(path), exists=False)
    if not path.is_dir():
        return rules.DataDirFacts(path=str(path), exists=True, is_dir=False)
    info = path.stat()
    writable, error = True, ""
    probe = path / f".doctor-{os.getpid()}.probe"
    try:
        with probe.open("wb") as out:
            out.write(b"\0" * 65536)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        writable, error = False, exc.strerror or str(exc)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    getuid = getattr(os, "getuid", None)
    return rules.DataDirFacts(path=str(path), exists=True, mode=info.st_mode & 0o777, owner_uid=info.st_uid,
                           my_uid=getuid() if getuid else None, writable=writable, write_error=error,
                           free_bytes=shutil.disk_usage(path).free)


def probe_data_dir(ctx: Context) -> dd.Check:
    """The data dir: exists, writable, ours, 0700, room to grow."""
    return rules.data_dir_check(data_dir_facts(ctx.data))


def fix_data_dir(path: Path) -> list[str]:
    """The safe fixes: make the data dir (0700) when missing, take others' access to yours away; what was done."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        return [f"mkdir -m 700 -p {path}"]
    info = path.stat()
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if path.is_dir() and mine and info.st_mode & 0o077:
        path.chmod(0o700)
        return [f"chmod 700 {path}"]
    return []


def platform_pids(data: Path) -> set[int]:
    """The running platform of this data dir: its supervisor and everything under it."""
    holder = lock_holder(data)
    if not holder or not holder.get("pid"):
        return set()
    try:
        root = psutil.Process(int(holder["pid"]))
        return {root.pid, *(p.pid for p in root.children(recursive=True))}
    except (psutil.Error, ValueError, TypeError):
        return set()


def listeners() -> dict[int, int | None]:
    """Every TCP port something listens on, and its pid where it can be seen."""
    found: dict[int, int | None] = {}
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr:
                found[conn.laddr.port] = conn.pid if found.get(conn.laddr.port) is None else found[conn.laddr.port]
    return found


def describe_pid(pid: int | None) -> str:
    """`pid 123 (python3)`, or "" when it cannot be seen."""
    if pid is None:
        return ""
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"


def probe_ports(ctx: Context) -> dd.Check:
    """The gateway's and NATS's ports: recorded ones while the platform runs, else the configured ones."""
    from urllib.parse import urlsplit

    from gateway.settings import load as load_gateway

    gateway = load_gateway().gateway
    holder = lock_holder(ctx.data)
    ours = platform_pids(ctx.data)
    record = read_record(ctx.data) if holder else None
    wanted = [("gateway", gateway.host or "127.0.0.1", gateway.port, False,
               "STOKER_GATEWAY_PORT / [gateway] port in stoker.toml")]
    if holder and holder.get("gateway"):
        wanted[0] = ("gateway", gateway.host or "127.0.0.1", urlsplit(holder["gateway"]).port or gateway.port, False,
                     wanted[0][4])
    nats_port = urlsplit(holder["nats"].split(",")[0]).port if holder and holder.get("nats") else 4222
    wanted += [("nats", "127.0.0.1", nats_port or 4222, True, "stoker up --port"),
               ("nats-monitor", "127.0.0.1", (record or {}).get("http_port") or 8222, True, "")]
    listening = listeners()
    facts = []
    for name, host, port, movable, setting in wanted:
        pid = listening.get(port, -1)
        free = pid == -1
        facts.append(rules.PortFacts(name=name, host=host, port=port, free=free, ours=not free and pid in ours,
                                  owner="" if free else describe_pid(pid), movable=movable, setting=setting))
    return rules.ports_check(facts, running=bool(holder))


async def probe_postgres(ctx: Context) -> dd.Check:
    """PostgreSQL answers `SELECT version()`, when the read models live there."""
    url = ctx.settings.database_url
    if not url.startswith(("postgres://", "postgresql://")):
        return rules.postgres_check(False, "")
    from urllib.parse import urlsplit

    import asyncpg

    parts = urlsplit(url)
    target = f"{parts.hostname}:{parts.port or 5432}{parts.path}"
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return rules.postgres_check(True, target, f"{exc.__class__.__name__}: {exc}")
    try:
        version = await conn.fetchval("SELECT current_setting('server_version')")
    finally:
        await conn.close()
    return rules.postgres_check(True, target, server=f"PostgreSQL {version}")


PROBES: dict[str, Callable[[Context], Any]] = {
    "python": probe_python, "packages": probe_packages, "nats-server": probe_nats_server, "gpu": probe_gpu,
    "data-dir": probe_data_dir, "ports": probe_ports, "nats": doctor_nats.probe_nats,
    "clock": doctor_nats.probe_clock, "postgres": probe_postgres, "service": doctor_systemd.probe_service,
    "linger": doctor_systemd.probe_linger,
    "control-plane": doctor_nats.probe_control_plane,
}
