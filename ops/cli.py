"""The `stoker` command line: one group, each family of commands in its own module."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from contracts.errors import DomainError
from contracts.subjects import Topology
from eventstore.config import CommonSettings, ConfigError, load_settings
from eventstore.connect import NatsUnavailable, connect
from eventstore.credentials import operator_credential
from eventstore.log import JetStreamLog
from eventstore.observability import configure_logging
from eventstore.ports import StreamMissing
from eventstore.server import resolve_nats_url
from eventstore.service import nats_security

T = TypeVar("T")


@dataclass
class Cli:
    """What every command gets: settings, output mode, and a way to reach NATS."""

    settings: CommonSettings
    as_json: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def topology(self) -> Topology:
        """Stream and subject names in use."""
        return Topology(self.settings.prefix)

    @property
    def nats_url(self) -> str:
        """The NATS server to talk to."""
        return resolve_nats_url(self.settings.nats_url, self.settings.data_path)

    @property
    def credentials(self) -> Path | None:
        """The credential the CLI connects with (eventstore.credentials.operator_credential)."""
        return operator_credential(self.settings.credentials_path, self.settings.data_path)

    @asynccontextmanager
    async def connection(self, require_log: bool = True) -> AsyncIterator[tuple[Any, JetStreamLog]]:
        """A NATS connection and the event log, closed afterwards."""
        nc = await connect(self.nats_url, "stoker-cli", reconnect=False,
                           **{**nats_security(self.settings), "credentials": self.credentials})
        try:
            log = JetStreamLog(nc, self.topology)
            if require_log:
                await _check_log(log, self.nats_url)
            yield nc, log
        finally:
            await nc.close()


async def _check_log(log: JetStreamLog, url: str) -> None:
    try:
        await log.stream_state()
    except StreamMissing:
        raise NatsUnavailable(f"NATS at {url} holds no stoker event log ({log.topology.events_stream}); "
                              "start the platform with `stoker up`, or point --nats at it") from None


def run_async(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async click command; known errors become one clear line and exit code 1 (2 for usage)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except (NatsUnavailable, ConfigError, DomainError, ValueError, OSError) as exc:
            click.echo(f"stoker: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


pass_cli = click.make_pass_decorator(Cli)


@click.group()
@click.option("--data-dir", envvar="STOKER_DATA_DIR", help="Where stoker keeps its data (default: platform's).")
@click.option("--nats", "nats_url", envvar="STOKER_NATS_URL", help="NATS server URL (default: the embedded one).")
@click.option("--credentials", envvar="STOKER_NATS_CREDENTIALS",
              help="NATS credential (nkey seed file; default: the data dir's admin credential).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.version_option(package_name="stoker")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None, nats_url: str | None, credentials: str | None,
         as_json: bool) -> None:
    """stoker keeps long training and evaluation jobs running on your machines."""
    try:
        settings = load_settings(CommonSettings, overrides={"data_dir": data_dir, "nats_url": nats_url,
                                                            "nats_credentials": credentials})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging("cli", settings.log_format, "warning")
    ctx.obj = Cli(settings=settings, as_json=as_json)


def _register() -> None:
    from ops.commands import admin, events, platform, security, status

    for module in (events, admin, platform, status, security):
        module.register(main)
    _register_optional()


def _register_optional() -> None:
    # Command families that arrive with their services register themselves here when present.
    import importlib

    for name in ("ops.commands.jobs", "ops.commands.tokens", "ops.commands.jointoken", "ops.commands.maps",
                 "ops.commands.monitor",
                 # issue 13: stoker as a background service
                 "ops.commands.service",
                 # issue 14: the firewall
                 "ops.commands.firewall",
                 # issue 13: diagnosis, backup and restore
                 "ops.commands.doctor", "ops.commands.backup",
                 "ops.commands.lan",  # discover, qr (issue 14)
                 "ops.commands.workloads"):  # workloads and their declared parameters
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(main)


_register()
