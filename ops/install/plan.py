"""What a service install is, as data: the files to write and the commands to run, and how to undo them. Pure.

`build_plan(request, host)` turns what the user asked (`Request`) and what this machine is (`Host`, gathered
by ops.install.host) into a `Plan`; the generators for each service manager live beside this module.
`stoker service install --dry-run` prints a plan; `install` applies it and records a `Manifest`, from which
`uninstall` removes exactly what was written.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from contracts.events import Gpu

Role = Literal["control-plane", "worker"]
Target = Literal["linux", "macos", "windows"]
SERVICE_USER = "stoker"  # the dedicated account of a --system install on Linux
SYSTEM_DATA_DIR = "/var/lib/stoker"
GPU_GROUPS = ("video", "render")  # GPU device nodes belong to these groups on most distributions
RECORD_DIR = "service"  # in the data dir: the manifest, the GPU record, the Windows launcher
MANIFEST_FILE, GPUS_FILE, LAUNCHER_FILE = "manifest.json", "gpus.json", "stoker-service.py"
# The GPU record, for the worker (it waits for them) and the monitor (its `gpu_missing` alert counts them).
EXPECTED_GPUS_ENVS = ("STOKER_TRAINER_EXPECTED_GPUS_FILE", "STOKER_MONITOR_EXPECTED_GPUS_FILE")


class PlannedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file the install writes."""

    path: str
    mode: int
    content: str


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """A command the install (or uninstall) runs; `must` False: its failure is reported, not fatal."""

    argv: tuple[str, ...]
    why: str
    must: bool = True


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything an install does, in order: files first, then commands; and what undoes it."""

    target: Target
    name: str  # the unit, label or service name
    role: Role
    system: bool
    data_dir: str
    argv: tuple[str, ...]  # what the service runs
    files: tuple[PlannedFile, ...]
    commands: tuple[Command, ...]
    undo_before: tuple[Command, ...]  # stop and disable, before the files go
    undo_after: tuple[Command, ...] = ()  # reload the manager, after the files went
    purge: tuple[Command, ...] = ()  # with --purge only, after the data dir went
    notes: tuple[str, ...] = ()
    # `stoker service start|stop|restart|status|logs|follow`: the commands each runs, in order.
    controls: dict[str, tuple[tuple[str, ...], ...]] = msgspec.field(default_factory=dict)
    log_files: tuple[str, ...] = ()  # where `stoker service logs` reads when the manager keeps no journal


class ServiceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What runs as the service and where: the input every generator shares."""

    name: str
    description: str
    argv: tuple[str, ...]
    env: dict[str, str]
    data_dir: str
    log_dir: str
    system: bool
    user: str = ""  # the account a system service runs as
    groups: tuple[str, ...] = ()  # its supplementary groups
    gpu_host: bool = False
    start_timeout_s: int | None = None  # None: no limit (a worker may wait long for its platform)
    stop_timeout_s: int = 300


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """What the user asked for."""

    role: Role = "control-plane"
    system: bool = False
    data_dir: str
    nats_url: str = ""  # a worker that did not join: the platform's NATS
    config_file: str = ""  # the stoker.toml in use when installing: the service uses it too


class Host(msgspec.Struct, frozen=True, kw_only=True):
    """What this machine is, as far as an install cares (gathered by ops.install.host; fixed in tests)."""

    target: Target
    python: str  # the interpreter the service runs (this virtual environment's)
    home: str
    user: str
    uid: int = 0
    config_home: str = ""  # $XDG_CONFIG_HOME or ~/.config
    gpus: tuple[Gpu, ...] = ()
    gpu_driver: bool = False  # an NVIDIA driver is installed (nvidia-persistenced may exist)
    groups: tuple[str, ...] = ()  # which of GPU_GROUPS exist
    service_user_exists: bool = False
    lingering: bool = False  # systemd keeps this user's manager running without a login already
    base_python: str = ""  # Windows: the interpreter behind the venv's launcher
    site_dirs: tuple[str, ...] = ()  # Windows: the venv's site-packages
    dll_dirs: tuple[str, ...] = ()  # Windows: where python3X.dll and pywin32's DLLs are
    joined: bool = False  # the data dir joined a platform (`stoker worker --join`)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What an install wrote and how to undo it: `<data dir>/service/manifest.json`."""

    plan: Plan
    digests: dict[str, str]  # path → SHA-256 of what was written
    made_dirs: tuple[str, ...] = ()  # directories the install created (removed when left empty)
    installed_at: str = ""


class InstallError(ValueError):
    """The install cannot be planned as asked; the message says why and what to do."""


def service_name(role: Role, target: Target) -> str:
    """`stoker` (control plane) or `stoker-worker`; launchd labels are `local.stoker[-worker]`."""
    base = "stoker" if role == "control-plane" else "stoker-worker"
    return f"local.{base}" if target == "macos" else base


def service_argv(python: str, request: Request) -> tuple[str, ...]:
    """The command the service runs: `stoker up`, or `stoker worker` on the joined (or given) platform."""
    head = (python, "-m", "ops", "--data-dir", request.data_dir)
    if request.role == "control-plane":
        return (*head, "up")
    return (*head, "worker", "--nats", request.nats_url) if request.nats_url else (*head, "worker")


def service_spec(request: Request, host: Host, target: Target, *, log_dir: str, system: bool,
                 what: str = "", **more: Any) -> ServiceSpec:
    """The spec every target's generator starts from: name, description, command, environment, data and log
    dirs; the control plane gets longer to stop (it checkpoints its local worker's jobs too)."""
    what = what or ("control plane" if request.role == "control-plane" else "worker")
    return ServiceSpec(name=service_name(request.role, target), description=f"stoker {what}",
                       argv=service_argv(host.python, request), env=service_env(request, target),
                       data_dir=request.data_dir, log_dir=log_dir, system=system,
                       stop_timeout_s=300 if request.role == "control-plane" else 150, **more)


def record_path(data_dir: str, name: str, target: Target) -> str:
    """A file of the install's own record in the data dir, with the target's separator."""
    sep = "\\" if target == "windows" else "/"
    return sep.join((data_dir.rstrip("/\\"), RECORD_DIR, name))


def service_env(request: Request, target: Target) -> dict[str, str]:
    """The service's environment: its data dir, the config in use, the GPU record, unbuffered output."""
    record = record_path(request.data_dir, GPUS_FILE, target)
    env = {"STOKER_DATA_DIR": request.data_dir, "PYTHONUNBUFFERED": "1"} | dict.fromkeys(EXPECTED_GPUS_ENVS, record)
    if request.config_file:
        env["STOKER_CONFIG"] = request.config_file
    return env


def gpu_record(request: Request, host: Host) -> PlannedFile:
    """The GPUs seen at install, which the worker waits for before it registers (services.trainer.gpucheck)."""
    return PlannedFile(path=record_path(request.data_dir, GPUS_FILE, host.target), mode=0o600,
                       content=msgspec.json.encode(list(host.gpus)).decode() + "\n")


def check_request(request: Request, host: Host) -> None:
    """InstallError for what cannot be installed as asked."""
    if request.role == "worker" and not (host.joined or request.nats_url):
        raise InstallError("this data dir has not joined a platform: install with `--join TOKEN` (from "
                           "`stoker join-token create` on the control plane), or give `--nats URL`")
    if request.role == "control-plane" and request.nats_url:
        raise InstallError("--nats is for a worker: the control plane runs its own NATS")
    if request.system and host.target == "macos":
        raise InstallError("--system is not supported on macOS: a LaunchAgent runs as you (omit --system)")


def build_plan(request: Request, host: Host) -> Plan:
    """The plan for this request on this host (InstallError when it cannot be done)."""
    check_request(request, host)
    if host.target == "linux":
        from ops.install import systemd as generator
    elif host.target == "macos":
        from ops.install import launchd as generator
    else:
        from ops.install import windows as generator
    return generator.plan(request, host)


def gpu_summary(gpus: tuple[Gpu, ...] | list[Gpu]) -> str:
    """`2 x NVIDIA H200`; `none`."""
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu.name] = counts.get(gpu.name, 0) + 1
    return ", ".join(f"{n} x {name}" for name, n in sorted(counts.items())) or "none"


def describe_command(argv: tuple[str, ...], target: Target) -> str:
    """A command as one would type it on that target (Windows: the C runtime's quoting rules)."""
    if target != "windows":
        return " ".join(_posix_quote(a) for a in argv)
    return " ".join(_windows_quote(a) for a in argv)


def _posix_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "@%+=:,./-_" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _windows_quote(arg: str) -> str:
    if arg and not any(c in arg for c in ' \t"'):
        return arg
    out, slashes = ['"'], 0
    for c in arg:
        if c == "\\":
            slashes += 1
            continue
        out.append("\\" * (slashes * 2 + 1) + '"' if c == '"' else "\\" * slashes + c)
        slashes = 0
    out.append("\\" * (slashes * 2) + '"')
    return "".join(out)
