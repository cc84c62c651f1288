"""`stoker service install|uninstall|status|logs|start|stop|restart`: stoker as a background service.

The plan (ops.install.plan) says every file and command; `install --dry-run` prints it and changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click
import msgspec
import platformdirs

from eventstore.config import config_file
from ops import joined as membership
from ops.cli import Cli, pass_cli, run_async
from ops.install import host as machine
from ops.install.plan import (
    SYSTEM_DATA_DIR,
    InstallError,
    Manifest,
    Plan,
    Request,
    Target,
    build_plan,
    describe_command,
    gpu_summary,
)
from ops.jointoken import InvalidJoinToken, decode_token
from ops.output import emit_json

TARGETS = ("linux", "macos", "windows")
system_option = click.option("--system", is_flag=True,
                             help=f"A system service (Linux: as the `stoker` user, data in {SYSTEM_DATA_DIR}).")


def data_dir(cli: Cli, system: bool) -> Path:
    """The data dir the service uses, not created here (a dry run changes nothing)."""
    if cli.settings.data_dir:
        return Path(cli.settings.data_dir).expanduser().resolve()
    return Path(SYSTEM_DATA_DIR) if system else Path(platformdirs.user_data_dir("stoker")).expanduser().resolve()


def _fail(message: str) -> None:
    click.echo(f"stoker: {message}", err=True)
    sys.exit(1)


@click.group("service")
def service_group() -> None:
    """Run stoker at boot and restart it after a crash (systemd, launchd, the Windows service manager)."""


@service_group.command("install")
@click.option("--role", type=click.Choice(["control-plane", "worker"]), default="control-plane", show_default=True,
              help="control-plane: the whole platform (`stoker up`); worker: `stoker worker` for a platform elsewhere.")
@system_option
@click.option("--dry-run", is_flag=True, help="Print every file and command, and change nothing.")
@click.option("--join", "join_token", metavar="TOKEN", help="worker: join the token's platform first (once).")
@click.option("--nats", "nats_url", help="worker: the platform's NATS, for a data dir that did not join.")
@click.option("--target", type=click.Choice(TARGETS), hidden=True, help="--dry-run: preview another OS's plan.")
@pass_cli
def install(cli: Cli, role: str, system: bool, dry_run: bool, join_token: str | None, nats_url: str | None,
            target: Target | None) -> None:
    """Install and start the service; record what was written so that `uninstall` removes exactly that."""
    if target is not None and not dry_run:
        raise click.UsageError("--target only previews (with --dry-run)")
    if join_token and role != "worker":
        raise click.UsageError("--join is for --role worker")
    target = target or machine.current_target()
    data = data_dir(cli, system)
    if system and target == "linux" and not dry_run and os.geteuid() != 0:
        _fail("--system writes /etc/systemd/system and makes the `stoker` account: run it with sudo")
    config = config_file()
    request = Request(role=role, system=system, data_dir=str(data), nats_url=nats_url or "",  # type: ignore[arg-type]
                      config_file=str(config.resolve()) if config else "")
    if not dry_run and machine.manifest_path(data).exists():  # before a join: refuse first, change nothing
        _fail("a service is installed for this data dir already: `stoker service uninstall` first")
    if join_token:
        _join_first(data, join_token, dry_run)
    gpus, why = machine.probe_gpus()
    host = machine.gather(target, data, gpus)
    if join_token:
        host = msgspec.structs.replace(host, joined=True)
    try:
        plan = build_plan(request, host)
    except InstallError as exc:
        _fail(str(exc))
    gpu_line = f"GPUs recorded for the worker to wait for: {gpu_summary(gpus)}" + (
        f" ({why})" if why else "")
    if dry_run:
        _print_plan(cli, plan, gpu_line)
        return
    click.echo(f"installing {_kind(plan)} {plan.name}: {describe_command(plan.argv, plan.target)}")
    runner = machine.Runner(click.echo)
    try:
        machine.install(plan, data, runner)
    except (InstallError, OSError) as exc:
        _fail(str(exc))
    for note in (*plan.notes, gpu_line):
        click.echo(f"  {note}")
    if runner.skipped:
        click.echo(f"stoker: installed the files, but {', '.join(sorted(set(runner.skipped)))} is not here: the "
                   "service is not running; run the commands above yourself", err=True)
    else:
        click.echo("installed: `stoker service status` shows it, `stoker service logs --follow` its output")


def _join_first(data: Path, token: str, dry_run: bool) -> None:
    try:
        decoded = decode_token(token)
    except InvalidJoinToken as exc:
        _fail(str(exc))
    if dry_run:
        click.echo(f"would join platform {decoded.platform_id} at {', '.join(decoded.urls)} first "
                   f"(its keys in {data}/join)")
        return
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    joined = run_async(membership.join)(data, token)
    click.echo(f"joined platform {joined.platform_id} as worker {joined.worker_id}")


def _kind(plan: Plan) -> str:
    if plan.target == "linux":
        return "system unit" if plan.system else "user unit"
    return "LaunchAgent" if plan.target == "macos" else "Windows service"


def _print_plan(cli: Cli, plan: Plan, gpu_line: str) -> None:
    """Every file with its content and every command, as install would do them."""
    if cli.as_json:
        emit_json(msgspec.to_builtins(plan))
        return
    click.echo(f"stoker service install --dry-run: nothing is changed. On {plan.target}, the {_kind(plan)} "
               f"{plan.name} ({plan.role}) would be installed.")
    for planned in plan.files:
        click.echo(f"would write {planned.path} (mode {planned.mode:04o}):")
        click.echo("\n".join(f"    | {line}" for line in planned.content.splitlines()))
    for command in plan.commands:
        click.echo(f"would run: {describe_command(command.argv, plan.target)}    # {command.why}")
    for note in (*plan.notes, gpu_line):
        click.echo(f"note: {note}")
    click.echo(f"and record what was written in {Path(plan.data_dir) / 'service' / 'manifest.json'}")


def _installed(cli: Cli, system: bool) -> tuple[Path, Manifest]:
    data = data_dir(cli, system)
    try:
        manifest = machine.read_manifest(data)
    except InstallError as exc:
        _fail(str(exc))
    if manifest is None:
        hint = "" if system else "; installed with --system? add --system"
        _fail(f"no service is installed for the data dir {data} (`stoker service install`{hint})")
    return data, manifest


@service_group.command("uninstall")
@system_option
@click.option("--purge", is_flag=True, help="Also delete the data dir: the event log, checkpoints, credentials.")
@pass_cli
def uninstall(cli: Cli, system: bool, purge: bool) -> None:
    """Stop the service and remove exactly what install wrote; the data stays unless --purge."""
    data, manifest = _installed(cli, system)
    click.echo(f"uninstalling {_kind(manifest.plan)} {manifest.plan.name}")
    kept = machine.uninstall(manifest, data, machine.Runner(click.echo), purge)
    for line in kept:
        click.echo(f"  kept {line}")
    click.echo("uninstalled" + ("" if purge else f"; the data stays in {data} (--purge deletes it)"))


def _control(cli: Cli, system: bool, action: str) -> None:
    _data, manifest = _installed(cli, system)
    commands = manifest.plan.controls.get(action, ())
    code = 0
    for argv in commands:
        try:
            code = subprocess.run(list(argv), check=False).returncode
        except FileNotFoundError:
            _fail(f"{argv[0]} is not here: cannot {action} the service {manifest.plan.name}")
        if code != 0:
            break
    sys.exit(code)


@service_group.command("status")
@system_option
@pass_cli
def status(cli: Cli, system: bool) -> None:
    """What is installed, and what the service manager says of it."""
    _data, manifest = _installed(cli, system)
    plan = manifest.plan
    click.echo(f"installed: {_kind(plan)} {plan.name} ({plan.role}) on {manifest.installed_at}; files: "
               + ", ".join(manifest.digests))
    _control(cli, system, "status")


def _action(name: str, doc: str) -> None:
    @service_group.command(name, help=doc)
    @system_option
    @pass_cli
    def command(cli: Cli, system: bool) -> None:
        _control(cli, system, name)


_action("start", "Start the service.")
_action("stop", "Stop the service (running jobs checkpoint and go back to the queue).")
_action("restart", "Restart the service.")


@service_group.command("logs")
@system_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--lines", "-n", type=click.IntRange(min=1), default=200, show_default=True,
              help="Lines of each log file (where there is no journal).")
@pass_cli
def logs(cli: Cli, system: bool, follow: bool, lines: int) -> None:
    """The service's output: the journal (systemd), else its log files in the data dir."""
    _data, manifest = _installed(cli, system)
    if manifest.plan.controls.get("logs"):
        _control(cli, system, "follow" if follow else "logs")
    files = [Path(f) for f in manifest.plan.log_files]
    for path in files:
        click.echo(f"==> {path} <==")
        try:
            click.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        except FileNotFoundError:
            click.echo("(nothing yet)")
    if follow:
        _follow(files)


def _follow(files: list[Path]) -> None:
    """Print what is appended to `files` until Ctrl-C."""
    offsets = {p: p.stat().st_size if p.exists() else 0 for p in files}
    try:
        while True:
            for path in files:
                if path.exists() and path.stat().st_size > offsets[path]:
                    with path.open("rb") as handle:
                        handle.seek(offsets[path])
                        chunk = handle.read()
                    offsets[path] += len(chunk)
                    click.echo(chunk.decode(errors="replace"), nl=False)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


def register(group: click.Group) -> None:
    """Add `stoker service`."""
    group.add_command(service_group)
