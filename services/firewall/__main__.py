"""`python -m services.firewall plan|apply|status|remove`: what `stoker firewall …` runs (by module name).

The listeners come as arguments (`--listen gateway=0.0.0.0:8000`): `stoker firewall` reads them from the
running platform's state or from the settings, which this service may not import. Exit codes: 0 done or in
place; 1 a command failed, or (status) a rule is missing or stale; 2 bad input; 4 needs root/administrator
(the commands were printed for a person to run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Sequence

from contracts import events as ev
from contracts.base import is_valid_id, utcnow
from eventstore.config import CommonSettings, ConfigError, load_settings
from services.firewall import system
from services.firewall.backends import BACKENDS, Backend, build, choose
from services.firewall.domain import Listener, Plan, PlanError, Rule, diff, lan_subnets, rules_for, shell

EXIT_FAILED, EXIT_USAGE, EXIT_NEEDS_ROOT = 1, 2, 4


class NoFirewall(Exception):
    """Nothing filters incoming traffic here: there is nothing to open."""


def parse_listener(text: str) -> Listener:
    """`name=host:port` (`nats=[::]:4222`) → a Listener; PlanError with one clear line otherwise."""
    name, _, where = text.partition("=")
    host, _, port = where.rpartition(":")
    if not name or not host or not port.isdigit():
        raise PlanError(f"--listen {text!r}: expected NAME=HOST:PORT, e.g. gateway=0.0.0.0:8000")
    return Listener(name, host.strip("[]"), int(port))


def sources_from(given: Sequence[str]) -> list[str]:
    """`lan` (the default) becomes this machine's LAN networks; anything else is passed on as given."""
    out: list[str] = []
    for source in given or ["lan"]:
        if source.lower() != "lan":
            out.append(source)
            continue
        found = lan_subnets(system.interfaces())
        if not found:
            raise PlanError("no LAN address found on this machine (only loopback, container or VPN interfaces): "
                            "pass --source CIDR")
        out += found
    return out


def make_plan(listeners: Sequence[Listener], sources: Sequence[str], backend_name: str | None) -> Plan:
    """Detect the firewall (unless named), read its state, and plan the rules for the listeners."""
    wanted = rules_for(listeners, sources_from(sources))
    facts = system.gather_facts()
    name = backend_name or choose(facts)
    if name is None:
        raise NoFirewall("no firewall is in charge here (no firewalld, ufw, nft or iptables): nothing blocks the ports")
    backend: Backend = build(name, facts)
    return backend.plan(wanted, system.read_state(backend))


def report(plan: Plan) -> dict:
    """A plan as JSON."""
    def rules(items: Sequence[Rule]) -> list[dict]:
        return [{"name": r.name, "port": r.port, "protocol": r.protocol, "source": r.source} for r in items]

    return {"backend": plan.backend, "wanted": rules(plan.wanted), "present": rules(sorted(plan.state.present)),
            "missing": rules(plan.missing), "stale": rules(plan.stale), "in_place": plan.in_place,
            "state_readable": plan.state.readable, "apply": [shell(c) for c in plan.commands],
            "remove": [shell(c) for c in plan.remove], "check": [shell(c) for c in plan.check],
            "notes": [*plan.state.notes, *plan.notes]}


def say(text: str = "", err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def show(plan: Plan, what: str) -> None:
    """The plan for a person: the diff, the commands of `what` (apply or remove), the notes."""
    say(f"firewall: {plan.backend}")
    say("\n".join(diff(plan)) or "  (stoker opens nothing: every listener is on loopback)")
    commands = plan.commands if what == "apply" else plan.remove
    if commands:
        say(f"commands to {what}:")
        say("\n".join(f"  {shell(c)}" for c in commands))
    for note in (*plan.state.notes, *plan.notes):
        say(f"note: {note}")


def as_events(rules: Sequence[Rule]) -> tuple[ev.FirewallRule, ...]:
    return tuple(ev.FirewallRule(name=r.name, port=r.port, protocol=r.protocol, source=r.source) for r in rules)


async def record(event: ev.FirewallEvent) -> None:
    """Append the event as the admin of this data dir's platform; say so in one line where that is not possible."""
    # Imported here: planning and changing the firewall need no NATS client (and start a second faster without).
    from contracts.subjects import Topology
    from eventstore.connect import connect
    from eventstore.credentials import operator_credential
    from eventstore.log import JetStreamLog
    from eventstore.server import read_record, resolve_nats_url
    from eventstore.service import nats_security

    settings = load_settings(CommonSettings)
    if not settings.nats_url and read_record(settings.data_path) is None:
        say("note: not recorded in the event log (stoker is not running from this data dir)", err=True)
        return
    security = nats_security(settings)
    credentials = operator_credential(settings.credentials_path, settings.data_path)
    try:
        nc = await connect(resolve_nats_url(settings.nats_url, settings.data_path), "stoker-firewall",
                           reconnect=False, ca_file=security["ca_file"], credentials=credentials)
    except Exception as exc:  # the firewall changed either way: the log is told when it can be
        say(f"note: not recorded in the event log ({exc})", err=True)
        return
    try:
        log = JetStreamLog(nc, Topology(settings.prefix))
        if isinstance(event, ev.FirewallPlanned):  # the same plan looked at again is not news
            history, _version = await log.load("firewall", event.host_id)
            if history and same_plan(history[-1].event, event):
                return
        await log.append("firewall", event.host_id, [event])
    except Exception as exc:
        say(f"note: not recorded in the event log ({exc})", err=True)
    finally:
        await nc.close()


def same_plan(last: object, planned: ev.FirewallPlanned) -> bool:
    """Whether `last` (the host's newest firewall event) already records this plan."""
    return (isinstance(last, ev.FirewallPlanned) and last.backend == planned.backend and last.rules == planned.rules
            and last.commands == planned.commands and last.by_hand == planned.by_hand)


def host_id(given: str | None) -> str:
    """This host's id: as given (by `stoker firewall`), else the local worker's (as the monitor's)."""
    from eventstore.credentials import local_worker_id  # as in record(): only when an event is made

    return given or local_worker_id("", load_settings(CommonSettings).data_path, socket.gethostname())


def act(args: argparse.Namespace) -> int:
    """Run one action; its exit code."""
    plan = make_plan([parse_listener(t) for t in args.listen], args.source, args.backend)
    if args.json:
        print(json.dumps(report(plan), indent=1))
    if args.action == "plan":
        if not args.json:
            show(plan, "apply")
        if not plan.in_place and args.record:
            _record(args, ev.FirewallPlanned, plan, plan.wanted, plan.commands, planned_at=utcnow())
        return 0
    if args.action == "status":
        return status(plan, args.json)
    return change(plan, args)


def status(plan: Plan, quiet: bool) -> int:
    """What stoker's rules are there and what is missing (a reload or a reboot wipes runtime rules)."""
    if not quiet:
        say(f"firewall: {plan.backend}")
        present = {r.key for r in plan.state.present}
        for rule in plan.wanted:
            say(f"  {'open   ' if rule.key in present else 'MISSING'}  {rule.describe()}")
        for rule in plan.stale:
            say(f"  stale    {rule.describe()} (stoker's, no longer wanted)")
        if not plan.state.readable:
            say("  (the firewall's state could not be read: run as root/administrator)")
        elif plan.missing:
            say("missing rules were never applied, or a firewall reload wiped them: `stoker firewall apply`")
    return 0 if plan.in_place and plan.state.readable else EXIT_FAILED


def change(plan: Plan, args: argparse.Namespace) -> int:
    """apply or remove: run the commands as root, or print them for a person who is."""
    applying = args.action == "apply"
    commands = plan.commands if applying else plan.remove
    if not args.json:
        show(plan, args.action)
    if not commands:
        say("nothing to do: " + ("the firewall is as planned" if applying else "no rule of stoker's is there"),
            err=args.json)
        return 0
    if not system.is_admin():
        say(f"stoker: changing the firewall needs root (administrator): run the commands above as root, or "
            f"`sudo stoker firewall {args.action}`", err=True)
        if applying and args.record:
            _record(args, ev.FirewallPlanned, plan, plan.wanted, commands, by_hand=True, planned_at=utcnow())
        return EXIT_NEEDS_ROOT
    for result in system.run_all(commands):
        if not result.ok:
            say(f"stoker: `{shell(result.argv)}` failed (exit {result.code}): {result.stderr.strip()}", err=True)
            return EXIT_FAILED
    if applying:
        _record(args, ev.FirewallApplied, plan, plan.wanted, commands, applied_at=utcnow())
        say(f"applied: {len(plan.wanted)} rule(s) open", err=args.json)
    else:
        _record(args, ev.FirewallRemoved, plan, sorted(plan.state.present), commands, removed_at=utcnow())
        say("removed: stoker's rules are gone; nobody else's were touched", err=args.json)
    return 0


def _record(args: argparse.Namespace, kind: type[ev.FirewallEvent], plan: Plan, rules: Sequence[Rule],
            commands: Sequence[tuple[str, ...]], **fields: object) -> None:
    if not args.record:
        return
    # Within the event's bounds (msgspec checks them when the event is read back, not when it is made).
    event = kind(host_id=host_id(args.host_id), backend=plan.backend, rules=as_events(rules)[:256],
                 commands=tuple(shell(c)[:2000] for c in commands)[:512], **fields)
    asyncio.run(record(event))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.firewall", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("plan", "apply", "status", "remove"))
    p.add_argument("--listen", action="append", default=[], metavar="NAME=HOST:PORT",
                   help="something of stoker's that listens (repeat); loopback ones need no opening")
    p.add_argument("--source", action="append", default=[], metavar="CIDR",
                   help="who may connect: `lan` (default: this machine's LAN networks), a network, or `any`")
    p.add_argument("--backend", choices=BACKENDS, help="the firewall to use (default: the one in charge)")
    p.add_argument("--host-id", help="the id events name this host by (default: the local worker's)")
    p.add_argument("--no-record", dest="record", action="store_false", help="append no event")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Parse, act, and exit with the action's code; bad input is one line and exit 2."""
    args = parser().parse_args(argv)
    if args.host_id is not None and not is_valid_id(args.host_id):
        say(f"stoker: --host-id {args.host_id!r} may hold only letters, digits, '-' and '_'", err=True)
        return EXIT_USAGE
    try:
        code = act(args)
    except NoFirewall as exc:
        say(f"stoker: {exc}")
        code = 0
    except (PlanError, ConfigError) as exc:
        say(f"stoker: {exc}", err=True)
        code = EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(cli_main())
