"""Windows and macOS backends as pure functions (tested as text: this machine runs neither).

Windows Defender Firewall: PowerShell `New-NetFirewallRule -Group stoker`, one inbound rule per port and
source (persistent by default), removed with `Remove-NetFirewallRule -Group stoker`.
macOS: the application firewall (`socketfilterfw`) allows the Python binary that runs stoker; where pf is
enabled, a pf anchor holds the port rules. The anchor is `com.apple/stoker`: the stock /etc/pf.conf evaluates
`com.apple/*`, so a top-level `stoker` anchor would never be reached without editing pf.conf.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from services.firewall.domain import ANY, TAG, Argv, Plan, Rule, State
from services.firewall.linux import Outputs, name_from

POWERSHELL = ("powershell", "-NoProfile", "-NonInteractive", "-Command")


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source_from(text: str) -> str:
    """A source as Windows or pf prints it (`Any`, `192.168.1.0/255.255.255.0`, `10.0.0.0/24`)."""
    text = text.strip()
    return ANY if text.lower() in ("any", "", "*") else str(ipaddress.ip_network(text, strict=False))


class WindowsDefender:
    """Windows Defender Firewall through PowerShell's NetSecurity module, every rule in group `stoker`."""

    name = "windows"
    check: tuple[Argv, ...] = ((*POWERSHELL, (
        "Get-NetFirewallRule -Group stoker -ErrorAction SilentlyContinue | ForEach-Object { "
        "$p = $_ | Get-NetFirewallPortFilter; $a = $_ | Get-NetFirewallAddressFilter; "
        "'{0}|{1}|{2}|{3}|{4}' -f $_.Name,$_.DisplayName,$p.Protocol,$p.LocalPort,($a.RemoteAddress -join ',') }")),)

    @staticmethod
    def rule_id(rule: Rule) -> str:
        """The rule's unique Name (DisplayName is `stoker <name>`)."""
        source = "any" if rule.source == ANY else rule.source.replace("/", "_").replace(":", "-")
        return f"{TAG}-{rule.name}-{rule.port}-{rule.protocol}-{source}"

    def parse(self, outputs: Outputs) -> State:
        """`Name|DisplayName|Protocol|LocalPort|RemoteAddress,…` lines, one per rule of the group."""
        if not outputs or outputs[0] is None:
            return State(readable=False, notes=("cannot read Windows Firewall's rules",))
        present, details = set(), []
        for line in outputs[0].splitlines():
            parts = line.strip().split("|")
            if len(parts) != 5 or not parts[3].isdigit():
                continue
            rule_name, display, protocol, port, remote = parts
            name = name_from(display)
            details.append(("rule", rule_name))
            if name and protocol.lower() in ("tcp", "udp"):
                for source in remote.split(","):
                    present.add(Rule(int(port), protocol.lower(), _source_from(source), name))
        return State(present=frozenset(present), details=tuple(details))

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan:
        """New rules for what is missing, stale ones removed by Name (rules are persistent once made)."""
        present = {r.key for r in state.present}
        wanted_ids = {self.rule_id(r) for r in wanted}
        runtime = [(*POWERSHELL, f"Remove-NetFirewallRule -Name {_ps_quote(n)}")
                   for (n,) in state.detail("rule") if n not in wanted_ids]
        for rule in wanted:
            if rule.key in present:
                continue
            remote = "Any" if rule.source == ANY else rule.source
            runtime.append((*POWERSHELL, (
                f"New-NetFirewallRule -Name {_ps_quote(self.rule_id(rule))} -DisplayName "
                f"{_ps_quote(f'{TAG} {rule.name}')} -Group {TAG} -Direction Inbound -Action Allow "
                f"-Protocol {rule.protocol.upper()} -LocalPort {rule.port} -RemoteAddress {remote} "
                "-Profile Domain,Private")))
        return Plan(self.name, tuple(wanted), state, runtime=tuple(runtime), remove=self._removal(state),
                    check=self.check, notes=("Windows keeps firewall rules (PersistentStore): no separate permanent "
                                             "step; run the commands in an administrator PowerShell",))

    def _removal(self, state: State) -> tuple[Argv, ...]:
        return ((*POWERSHELL, f"Remove-NetFirewallRule -Group {TAG}"),) if state.details else ()


SOCKETFILTERFW = "/usr/libexec/ApplicationFirewall/socketfilterfw"
ANCHOR = f"com.apple/{TAG}"


class MacFirewall:
    """macOS: the application firewall allows `python` (the binary that listens); pf, where enabled, the ports."""

    name = "macos"

    def __init__(self, python: str, pf_enabled: bool) -> None:
        self.python, self.pf_enabled = python, pf_enabled
        pf: tuple[Argv, ...] = (("pfctl", "-a", ANCHOR, "-sr"),) if pf_enabled else ()
        self.check: tuple[Argv, ...] = ((SOCKETFILTERFW, "--getglobalstate"),
                                        (SOCKETFILTERFW, "--getappblocked", python), *pf)

    def parse(self, outputs: Outputs) -> State:
        """Whether the app firewall is on and lets python in, and the anchor's rules (`label "stoker <name>"`)."""
        global_state, app = [*outputs, None, None][:2]
        details = []
        if global_state is not None and "enabled" in global_state.lower():
            details.append(("appfw", "on"))
        if app is not None and "permitted" in app.lower():
            details.append(("app", "permitted"))
        present = set()
        pf_out = outputs[2] if self.pf_enabled and len(outputs) > 2 else None
        for line in (pf_out or "").splitlines():
            found = re.search(r"pass in .*proto (tcp|udp) from (\S+) to any port = (\d+).*label \"([^\"]+)\"", line)
            name = name_from(found.group(4)) if found else None
            if found and name:
                present.add(Rule(int(found.group(3)), found.group(1), _source_from(found.group(2)), name))
        if pf_out:
            details.append(("anchor",))
        return State(present=frozenset(present), details=tuple(details), readable=global_state is not None)

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan:
        """Allow python in the app firewall; with pf on, load the anchor with exactly the wanted rules."""
        runtime: list[Argv] = []
        notes = ["the application firewall allows or blocks a program, not a port or a source: python may then "
                 "accept connections on any port"]
        app_ok = bool(state.detail("app"))
        if not app_ok:
            runtime += [(SOCKETFILTERFW, "--add", self.python), (SOCKETFILTERFW, "--unblockapp", self.python)]
        if self.pf_enabled:
            if {r.key for r in wanted} != {r.key for r in state.present}:
                lines = "\n".join(self.pf_rule(r) for r in wanted)
                runtime.append(("sh", "-c", f"printf '%s\\n' '{lines}' | pfctl -a {ANCHOR} -f -"))
            notes.append(f"pf anchors start empty at boot: `stoker firewall apply` again (anchor {ANCHOR})")
            present = state.present
        else:  # without pf, the app firewall's permission is what lets every wanted port in
            present = frozenset(wanted) if app_ok else frozenset()
        shown = State(present=present, details=state.details, readable=state.readable, notes=state.notes)
        return Plan(self.name, tuple(wanted), shown, runtime=tuple(runtime), remove=self._removal(state),
                    check=self.check, notes=tuple(notes))

    @staticmethod
    def pf_rule(rule: Rule) -> str:
        """One pf rule of the anchor, labelled `stoker <name>`."""
        family = "inet6" if rule.family == 6 and rule.source != ANY else "inet"
        return (f'pass in quick {family} proto {rule.protocol} from {rule.source} to any port {rule.port} '
                f'keep state label "{TAG} {rule.name}"')

    def _removal(self, state: State) -> tuple[Argv, ...]:
        out: list[Argv] = [("pfctl", "-a", ANCHOR, "-F", "rules")] if state.present or state.detail("anchor") else []
        if state.detail("app"):
            out.append((SOCKETFILTERFW, "--remove", self.python))
        return tuple(out)
