"""The firewall planner's core: what to open, from where, and how a plan compares with what is there.

Pure: no subprocess, no sockets, no psutil. The backends (`linux.py`, `desktop.py`) turn a `Request` and a
backend's parsed `State` into a `Plan` of exact commands; `system.py` runs them and reads the state.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from contracts.addresses import is_loopback

Protocol = Literal["tcp", "udp"]
Argv = tuple[str, ...]
ANY = "any"  # a rule's source when it is open to every address (only when asked: `--source any`)
TAG = "stoker"  # every rule stoker adds carries it (a comment, a chain, a group, a service, an anchor)
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class PlanError(ValueError):
    """A request the planner cannot turn into rules; the message says what to change."""


@dataclass(frozen=True, order=True)
class Rule:
    """One opening: `port`/`protocol` from `source` (a network in CIDR form, or `any`), named for what listens."""

    port: int
    protocol: Protocol
    source: str
    name: str

    @property
    def key(self) -> tuple[int, str, str]:
        """What makes two rules the same opening (the name is a label)."""
        return self.port, self.protocol, self.source

    @property
    def family(self) -> int:
        """4 or 6: the source's IP version (4 for `any`, which backends widen themselves)."""
        return 4 if self.source == ANY else ipaddress.ip_network(self.source).version

    def describe(self) -> str:
        """`gateway 8000/tcp from 192.168.1.0/24`."""
        where = "anywhere" if self.source == ANY else self.source
        return f"{self.name} {self.port}/{self.protocol} from {where}"


@dataclass(frozen=True)
class Listener:
    """Something of stoker's that listens: its name, the address it binds and its port."""

    name: str
    host: str
    port: int
    protocol: Protocol = "tcp"


def normalize_source(text: str) -> str:
    """A source as the rules write it: `any`, or a network in CIDR form (host bits cleared)."""
    text = text.strip()
    if text.lower() in (ANY, "0.0.0.0/0", "world"):
        return ANY
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise PlanError(f"source {text!r} is not a network (e.g. 192.168.1.0/24), `lan` or `any`") from None


def rules_for(listeners: Iterable[Listener], sources: Sequence[str]) -> tuple[Rule, ...]:
    """The rules that open every listener bound beyond loopback to every source (sorted, no duplicates)."""
    if not sources:
        raise PlanError("no source to open the ports to: pass --source CIDR (or `any`)")
    rules = set()
    for listener in listeners:
        if not NAME_RE.match(listener.name):
            raise PlanError(f"listener name {listener.name!r}: lowercase letters, digits and '-' only")
        if not 1 <= listener.port <= 65535:
            raise PlanError(f"{listener.name}: port {listener.port} is not 1-65535")
        if is_loopback(listener.host):
            continue  # only this machine can reach it: nothing to open
        for source in sources:
            rules.add(Rule(listener.port, listener.protocol, normalize_source(source), listener.name))
    return tuple(sorted(rules))


@dataclass(frozen=True)
class Interface:
    """One address of a network interface, as the system lists it."""

    name: str
    address: str
    netmask: str | None


# Interfaces that are not the LAN: containers, bridges, VPNs and tunnels (their names, on every OS).
NOT_LAN = re.compile(r"^(lo|docker|br-|veth|virbr|vmnet|vboxnet|cni|flannel|cali|kube|tun|tap|wg|tailscale|zt|"
                     r"utun|ppp|ipsec|gif|stf|awdl|llw|anpi|bridge|lxc|lxd|podman)", re.IGNORECASE)


def lan_subnets(interfaces: Iterable[Interface]) -> tuple[str, ...]:
    """The networks of this machine's LAN interfaces: private, not loopback, link-local, container or VPN."""
    found: list[str] = []
    for interface in interfaces:
        if NOT_LAN.match(interface.name) or not interface.netmask:
            continue
        try:
            network = ipaddress.ip_interface(f"{interface.address.split('%')[0]}/{_prefix(interface.netmask)}").network
        except ValueError:
            continue
        address = network.network_address
        if address.is_loopback or address.is_link_local or not address.is_private:
            continue
        if network.prefixlen == network.max_prefixlen:  # a point-to-point address: no LAN behind it
            continue
        if str(network) not in found:
            found.append(str(network))
    return tuple(found)


def _prefix(netmask: str) -> int:
    """A netmask (`255.255.255.0`, `ffff:ffff:ffff:ffff::`) as its prefix length."""
    return bin(int(ipaddress.ip_address(netmask))).count("1")


@dataclass(frozen=True)
class State:
    """What a backend found: stoker's rules that are present, and whatever it needs to remove them exactly."""

    present: frozenset[Rule] = frozenset()
    # Backend details: nftables' (family, table, chain, handle) of each stoker rule and the input chains,
    # iptables' chain and jump, firewalld's zone, …; kept as plain tuples so a State stays comparable.
    details: tuple[tuple[str, ...], ...] = ()
    readable: bool = True  # False: the state could not be read (no root): the plan assumes nothing is there
    notes: tuple[str, ...] = ()

    def detail(self, kind: str) -> list[tuple[str, ...]]:
        """The details of one kind, without the kind."""
        return [d[1:] for d in self.details if d and d[0] == kind]


@dataclass(frozen=True)
class Plan:
    """The exact commands that make the firewall open `wanted` and nothing else of stoker's."""

    backend: str
    wanted: tuple[Rule, ...]
    state: State
    runtime: tuple[Argv, ...] = ()  # the change now
    permanent: tuple[Argv, ...] = ()  # the change that survives a reboot or a reload
    remove: tuple[Argv, ...] = ()  # takes away exactly stoker's rules as they are now
    check: tuple[Argv, ...] = ()  # reads the state that says whether each rule is present
    notes: tuple[str, ...] = field(default=())
    permanent_first: bool = False  # firewalld: the permanent change, then a reload makes it the runtime one

    @property
    def missing(self) -> tuple[Rule, ...]:
        """Wanted rules that are not there (never applied, or wiped by a reload)."""
        present = {r.key for r in self.state.present}
        return tuple(r for r in self.wanted if r.key not in present)

    @property
    def stale(self) -> tuple[Rule, ...]:
        """Rules of stoker's that are there but no longer wanted (an old port, another source)."""
        wanted = {r.key for r in self.wanted}
        return tuple(sorted(r for r in self.state.present if r.key not in wanted))

    @property
    def in_place(self) -> bool:
        """Whether the firewall already is as wanted."""
        return not self.missing and not self.stale

    @property
    def commands(self) -> tuple[Argv, ...]:
        """Everything `apply` runs, in order."""
        return self.permanent + self.runtime if self.permanent_first else self.runtime + self.permanent


def diff(plan: Plan) -> list[str]:
    """Plan against what is there, one line a rule: `+` to add, `-` to take away, ` ` already in place."""
    present = {r.key for r in plan.state.present}
    lines = [f"{'  ' if r.key in present else '+ '}{r.describe()}" for r in plan.wanted]
    lines += [f"- {r.describe()}" for r in plan.stale]
    return lines


def shell(argv: Argv) -> str:
    """A command as a person would type it in a POSIX shell."""
    return shlex.join(argv)


def powershell(argv: Argv) -> str:
    """A PowerShell command line: the words as given (the planner writes them quoted already)."""
    return " ".join(argv)
