"""Which firewall is in charge, from facts about the machine (pure), and the backend object for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.firewall.desktop import MacFirewall, WindowsDefender
from services.firewall.domain import Argv, Plan, PlanError, Rule, State
from services.firewall.frontends import Firewalld, Ufw
from services.firewall.linux import Iptables, Nftables, Outputs

BACKENDS = ("firewalld", "ufw", "nftables", "iptables", "windows", "macos")
LINUX_ORDER = ("firewalld", "ufw", "nftables", "iptables")  # the first one in charge wins


class Backend(Protocol):
    """What every backend offers: the commands that read its state, how to read them, and the plan."""

    name: str
    check: tuple[Argv, ...]

    def parse(self, outputs: Outputs) -> State: ...

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan: ...


@dataclass(frozen=True)
class Facts:
    """What the machine says about its firewalls (gathered by `system.gather_facts`)."""

    os: str  # "linux", "windows", "darwin"
    firewalld_running: bool = False
    ufw_active: bool = False
    nft: bool = False
    iptables: bool = False
    netfilter_persistent: bool = False
    zone: str = "public"  # firewalld's default zone
    python: str = "python3"  # macOS: the binary the application firewall must let in
    pf_enabled: bool = False


def choose(facts: Facts) -> str | None:
    """The backend in charge: on Linux firewalld, then ufw, then nftables, then iptables; None when none is."""
    if facts.os == "windows":
        return "windows"
    if facts.os == "darwin":
        return "macos"
    available = {"firewalld": facts.firewalld_running, "ufw": facts.ufw_active, "nftables": facts.nft,
                 "iptables": facts.iptables}
    return next((name for name in LINUX_ORDER if available[name]), None)


def build(name: str, facts: Facts) -> Backend:
    """The backend called `name`, set up from the facts."""
    makers = {
        "firewalld": lambda: Firewalld(facts.zone),
        "ufw": Ufw,
        "nftables": Nftables,
        "iptables": lambda: Iptables(persist=facts.netfilter_persistent),
        "windows": WindowsDefender,
        "macos": lambda: MacFirewall(facts.python, facts.pf_enabled),
    }
    if name not in makers:
        raise PlanError(f"unknown firewall backend {name!r}; known: {', '.join(BACKENDS)}")
    return makers[name]()
