"""The I/O side of a service install: what this machine is, applying a plan, its manifest, and undoing it."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from contracts.events import Gpu
from ops import joined as membership
from ops.install.plan import (
    GPU_GROUPS,
    MANIFEST_FILE,
    RECORD_DIR,
    SERVICE_USER,
    Command,
    Host,
    InstallError,
    Manifest,
    Plan,
    Target,
)

GPU_PROBE_MODULE = "services.trainer.gpus"  # the worker's own detection, run by module name (ops imports no service)
GPU_PROBE_TIMEOUT_S = 120.0
Echo = Callable[[str], None]


def current_target() -> Target:
    """The service manager family of this machine."""
    if sys.platform == "darwin":
        return "macos"
    return "windows" if sys.platform == "win32" else "linux"


def probe_gpus(timeout: float = GPU_PROBE_TIMEOUT_S) -> tuple[list[Gpu], str]:
    """The GPUs this machine shows, as the worker detects them, and why none when there are none."""
    try:
        done = subprocess.run([sys.executable, "-m", GPU_PROBE_MODULE], capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=True)
        return msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=list[Gpu]), ""
    except subprocess.CalledProcessError as exc:
        return [], f"the GPU probe failed: {exc.stderr.decode(errors='replace').strip()[-300:]}"
    except (OSError, subprocess.SubprocessError, IndexError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [], f"the GPU probe failed: {exc}"


def _groups_present() -> tuple[str, ...]:
    try:
        import grp
    except ImportError:
        return ()
    present = []
    for name in GPU_GROUPS:
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            present.append(name)
    return tuple(present)


def _user_exists(name: str) -> bool:
    try:
        import pwd
    except ImportError:
        return False
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _windows_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The venv's site-packages, and the folders of python3X.dll and of pywin32's DLLs."""
    sites = tuple(site.getsitepackages())
    dlls = [str(Path(s) / sub) for s in sites for sub in ("pywin32_system32", "win32")]
    return sites, (*dlls, sys.base_prefix)


def gather(target: Target, data_dir: Path, gpus: list[Gpu]) -> Host:
    """This machine's facts an install needs (`target` may differ from this OS for a --dry-run preview)."""
    user = getpass.getuser()
    sites, dlls = _windows_dirs() if target == "windows" else ((), ())
    return Host(target=target, python=sys.executable, home=str(Path.home()), user=user,
                uid=os.getuid() if hasattr(os, "getuid") else 0, config_home=os.environ.get("XDG_CONFIG_HOME", ""),
                gpus=tuple(gpus), gpu_driver=any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl")),
                groups=_groups_present(), service_user_exists=_user_exists(SERVICE_USER),
                lingering=Path(f"/var/lib/systemd/linger/{user}").exists(),
                base_python=getattr(sys, "_base_executable", sys.executable), site_dirs=sites, dll_dirs=dlls,
                joined=membership.read_joined(data_dir) is not None)


def manifest_path(data_dir: Path) -> Path:
    """Where the install's manifest is kept."""
    return Path(data_dir) / RECORD_DIR / MANIFEST_FILE


def read_manifest(data_dir: Path) -> Manifest | None:
    """The manifest of the service installed for this data dir, if any."""
    try:
        return msgspec.json.decode(manifest_path(data_dir).read_bytes(), type=Manifest)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InstallError(f"the service manifest {manifest_path(data_dir)} cannot be read: {exc}") from None


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _make_dirs(path: Path, made: list[str], mode: int = 0o755) -> None:
    """Create `path` and missing parents, noting each one created."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=mode)
        made.append(str(folder))


def write_file(path: Path, content: str, mode: int) -> None:
    """Write atomically with exactly `mode` (never wider, even for a moment)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(content)
        with contextlib.suppress(OSError, NotImplementedError):
            os.fchmod(out.fileno(), mode)
    os.replace(tmp, path)


@dataclass
class Runner:
    """Runs a plan's commands: absent programs are skipped and said, failures of `must` commands stop."""

    echo: Echo
    which: Callable[[str], str | None] = shutil.which
    skipped: list[str] = field(default_factory=list)

    def run(self, command: Command) -> bool:
        """Run one command; False when it was skipped or failed without being a must."""
        program = command.argv[0]
        if self.which(program) is None:
            self.skipped.append(program)
            self.echo(f"  not run ({program} not found): {' '.join(command.argv)}")
            return False
        self.echo(f"  run: {' '.join(command.argv)}  ({command.why})")
        done = subprocess.run(list(command.argv), stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0 and command.must:
            raise InstallError(f"`{' '.join(command.argv)}` failed (exit {done.returncode}); what was written "
                               "stays recorded: `stoker service uninstall` removes it")
        if done.returncode != 0:
            self.echo(f"  that failed (exit {done.returncode}): it was to {command.why}")
        return done.returncode == 0


def install(plan: Plan, data_dir: Path, runner: Runner) -> Manifest:
    """Write the plan's files, record them in the manifest, then run its commands."""
    path = manifest_path(data_dir)
    if path.exists():
        raise InstallError(f"a service is installed for this data dir already ({read_manifest(data_dir).plan.name}"
                           f"): `stoker service uninstall` first")
    made: list[str] = []
    _make_dirs(path.parent, made, 0o700)  # the data dir and its record: private, as the platform keeps them
    digests = {}
    for planned in plan.files:
        target = Path(planned.path)
        _make_dirs(target.parent, made)
        write_file(target, planned.content, planned.mode)
        digests[planned.path] = _digest(planned.content)
        runner.echo(f"  wrote {planned.path} ({planned.mode:04o})")
    manifest = Manifest(plan=plan, digests=digests, made_dirs=tuple(made),
                        installed_at=datetime.now(UTC).isoformat(timespec="seconds"))
    write_file(path, msgspec.json.encode(manifest).decode(), 0o600)
    for command in plan.commands:
        runner.run(command)
    return manifest


def uninstall(manifest: Manifest, data_dir: Path, runner: Runner, purge: bool = False) -> list[str]:
    """Stop the service and remove exactly what its install wrote (the data too with `purge`); what was kept."""
    plan = manifest.plan
    for command in plan.undo_before:
        runner.run(command)
    kept = []
    for name, digest in manifest.digests.items():
        path = Path(name)
        try:
            if _digest(path.read_bytes()) != digest:
                kept.append(f"{name} (changed since the install: left in place)")
                continue
            path.unlink()
            runner.echo(f"  removed {name}")
        except FileNotFoundError:
            continue
    manifest_path(data_dir).unlink(missing_ok=True)
    for folder in sorted(manifest.made_dirs, key=lambda f: len(Path(f).parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: something else lives there now
            Path(folder).rmdir()
    for command in plan.undo_after:
        runner.run(command)
    if purge:
        shutil.rmtree(data_dir, ignore_errors=True)
        runner.echo(f"  removed the data dir {data_dir}")
        for command in plan.purge:
            runner.run(command)
    return kept
