"""`stoker firewall plan|apply|status|remove`: open stoker's ports to the LAN in this machine's firewall.

The planner and the backends are a service (`services/firewall`), which the CLI may not import: it runs
`services.firewall.__main__` by module name (as `stoker run` does), handing it the listeners, read here from
the running platform's state (the ports actually bound) or, when nothing runs, from the settings.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from typing import Any

import click

from eventstore.config import NatsSettings, load_settings
from eventstore.credentials import local_worker_id
from gateway.settings import load as load_gateway_settings
from ops.cli import Cli, pass_cli
from ops.lock import holder
from ops.ports import remembered
from ops.runstate import read_state

FIREWALL_MODULE = "services.firewall"
NATS_PORT = 4222  # `stoker up --port`'s default


def listeners(cli: Cli) -> tuple[list[dict[str, Any]], str]:
    """What stoker listens on here, and where that was learnt: the running platform, else the settings."""
    data = cli.settings.data_path
    state = read_state(data) or {}
    if holder(data) is not None and state.get("listeners"):
        return state["listeners"], "the running platform"
    kept = remembered(data)
    gateway = load_gateway_settings().gateway
    nats = load_settings(NatsSettings, "nats")

    def port(name: str, wanted: int) -> int:
        return kept.get(name, {}).get("port", wanted) if kept.get(name, {}).get("wanted") == wanted else wanted

    return ([{"name": "gateway", "host": gateway.host, "port": port("gateway", gateway.port)},
             {"name": "nats", "host": nats.listen, "port": port("nats", NATS_PORT)}],
            "the settings (stoker is not running here; a cluster's ports are known once it runs)")


def delegate(cli: Cli, action: str, sources: tuple[str, ...], backend: str | None, json_flag: bool,
             record: bool) -> int:
    """Run the firewall service's command for `action` with this machine's listeners; its exit code."""
    found, origin = listeners(cli)
    if not (cli.as_json or json_flag):
        click.echo(f"listeners from {origin}: "
                   + ", ".join(f"{item['name']} {item['host']}:{item['port']}" for item in found))
    argv = [action, *(f"--listen={item['name']}={item['host']}:{item['port']}" for item in found),
            *(f"--source={s}" for s in sources), "--host-id",
            local_worker_id("", cli.settings.data_path, socket.gethostname())]
    argv += [f"--backend={backend}"] if backend else []
    argv += ["--json"] if cli.as_json or json_flag else []
    argv += [] if record else ["--no-record"]
    # Only what was given: without it, the service finds this data dir's running platform and admin itself.
    os.environ.setdefault("STOKER_DATA_DIR", str(cli.settings.data_path))
    if cli.settings.nats_url:
        os.environ.setdefault("STOKER_NATS_URL", cli.settings.nats_url)
    if cli.settings.nats_credentials:
        os.environ.setdefault("STOKER_NATS_CREDENTIALS", cli.settings.nats_credentials)
    entry = importlib.import_module(f"{FIREWALL_MODULE}.__main__")
    return int(entry.cli_main(argv))


def _command(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.option("--source", "sources", multiple=True, metavar="CIDR",
                  help="Who may connect: `lan` (default: this machine's LAN networks), a network, or `any`.")
    @click.option("--backend", type=click.Choice(["firewalld", "ufw", "nftables", "iptables", "windows", "macos"]),
                  help="The firewall to use (default: the one in charge here).")
    @click.option("--json", "json_flag", is_flag=True, help="The plan as JSON.")
    @click.option("--no-record", is_flag=True, help="Append no event to the log.")
    @pass_cli
    def command(cli: Cli, sources: tuple[str, ...], backend: str | None, json_flag: bool, no_record: bool) -> None:
        sys.exit(delegate(cli, action, sources, backend, json_flag, not no_record))

    return command


@click.group("firewall")
def firewall_group() -> None:
    """Open stoker's ports (gateway, NATS, cluster routes) to the LAN in this machine's firewall.

    Exit codes: 0 done or in place; 1 a command failed, or (status) a rule is missing; 2 bad input;
    4 needs root/administrator (the exact commands are printed to run as root).
    """


for _action, _help in (
    ("plan", "What would change, as a diff, and the exact commands (nothing is changed)."),
    ("apply", "Open the ports now and for good (runtime and permanent); as root, else print the commands."),
    ("status", "Which of stoker's rules are there (a firewall reload can wipe them; `apply` puts them back)."),
    ("remove", "Delete exactly the rules stoker added, nothing else."),
):
    firewall_group.add_command(_command(_action, _help))


def register(group: click.Group) -> None:
    """Add `stoker firewall`."""
    group.add_command(firewall_group)
