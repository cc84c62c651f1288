"""`stoker doctor [CHECK…]` and `stoker --check-deps`: what is wrong here, and the command that fixes it."""

from __future__ import annotations

import asyncio
import sys

import click

from eventstore.config import CommonSettings, ConfigError, load_settings
from ops import doctor_domain as dd
from ops.cli import Cli, pass_cli
from ops.doctor import Context, run_checks
from ops.output import emit_json


def _run(settings: CommonSettings, names: list[str], as_json: bool, timeout: float, fix: bool) -> int:
    checks = asyncio.run(run_checks(names, Context(settings), timeout, fix))
    if as_json:
        emit_json(dd.report(checks))
    else:
        click.echo(dd.render(checks))
    return dd.exit_code(checks)


@click.command("doctor")
@click.argument("checks", nargs=-1, metavar="[CHECK]...")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document (docs/doctor.md).")
@click.option("--fix", is_flag=True, help="Apply the safe fixes (make the data dir, chmod it 0700) and say so.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds each check may take.")
@click.option("--deps", "deps_only", is_flag=True, help="Only the dependency checks (as `stoker --check-deps`).")
@pass_cli
def doctor(cli: Cli, checks: tuple[str, ...], as_json: bool, fix: bool, timeout: float, deps_only: bool) -> None:
    """Check this machine and the platform; each finding with its evidence and the command that fixes it.

    CHECK names the checks to run (all by default): python, packages, nats-server, gpu, data-dir, ports,
    nats, clock, postgres, service, linger, control-plane. Exit status: 0 all good, 1 warnings, 2 failures.
    """
    try:
        names = dd.select(list(checks), deps_only)
    except dd.UnknownCheck as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(_run(cli.settings, names, as_json or cli.as_json, timeout, fix))


def _check_deps(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # Eager: runs before the group's own settings are read, and ends the command line.
    if not value or ctx.resilient_parsing:
        return
    try:
        settings = load_settings(CommonSettings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.exit(_run(settings, dd.select([], deps_only=True), "--json" in sys.argv[1:], 15.0, False))


CHECK_DEPS = click.Option(["--check-deps"], is_flag=True, is_eager=True, expose_value=False, callback=_check_deps,
                          help="Check Python, the packages, nats-server and the GPUs (`stoker doctor --deps`), "
                               "then exit.")


def register(group: click.Group) -> None:
    """Add `stoker doctor` and the group's `--check-deps`."""
    group.add_command(doctor)
    group.params.append(CHECK_DEPS)
