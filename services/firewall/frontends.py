"""firewalld and ufw, the managers Linux distributions put on top of netfilter, as pure functions.

firewalld: a `stoker` service (the ports) and a rich rule per source in the default zone, made permanent and
loaded with a reload. ufw: one rule per port and source, commented `stoker <name>`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from services.firewall.domain import ANY, TAG, Argv, Plan, Rule, State
from services.firewall.linux import Outputs, comment_of, name_from


class Ufw:
    """ufw: `ufw allow from SOURCE to any port P proto tcp comment 'stoker <name>'` (ufw keeps its rules)."""

    name = "ufw"
    check: tuple[Argv, ...] = (("ufw", "status"),)
    line = re.compile(r"^(?:\[\s*\d+\]\s+)?(\d+)/(tcp|udp)(?: \(v6\))?\s+ALLOW(?: IN)?\s+(.+?)\s+#\s*(.+)$")

    def parse(self, outputs: Outputs) -> State:
        """Stoker's rules from `ufw status` (the ones commented `stoker …`)."""
        if not outputs or outputs[0] is None:
            return State(readable=False, notes=("cannot read ufw's rules",))
        present = set()
        for text in outputs[0].splitlines():
            match = self.line.match(text.strip())
            name = name_from(match.group(4)) if match else None
            if match and name:
                where = match.group(3).replace("(v6)", "").strip()
                source = ANY if where.startswith("Anywhere") else str(ipaddress.ip_network(where, strict=False))
                present.add(Rule(int(match.group(1)), match.group(2), source, name))
        return State(present=frozenset(present))

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan:
        """Allow what is missing, delete what is stale."""
        present = {r.key for r in state.present}
        wanted_keys = {r.key for r in wanted}
        runtime = [self._delete(r) for r in sorted(state.present) if r.key not in wanted_keys]
        runtime += [("ufw", "allow", *self._spec(r), "comment", comment_of(r)) for r in wanted if r.key not in present]
        return Plan(self.name, tuple(wanted), state, runtime=tuple(runtime), remove=self._removal(state),
                    check=self.check, notes=("ufw keeps its rules across reboots: no separate permanent step",))

    def _spec(self, rule: Rule) -> Argv:
        source = "any" if rule.source == ANY else rule.source
        return ("from", source, "to", "any", "port", str(rule.port), "proto", rule.protocol)

    def _delete(self, rule: Rule) -> Argv:
        return ("ufw", "delete", "allow", *self._spec(rule))

    def _removal(self, state: State) -> tuple[Argv, ...]:
        return tuple(self._delete(r) for r in sorted(state.present))


class Firewalld:
    """firewalld: a permanent `stoker` service holding the ports, and a rich rule per source in the zone."""

    name = "firewalld"
    service = TAG

    def __init__(self, zone: str = "public") -> None:
        self.zone = zone
        self.check: tuple[Argv, ...] = (
            ("firewall-cmd", "--permanent", f"--service={self.service}", "--get-ports"),
            ("firewall-cmd", f"--zone={zone}", "--list-rich-rules"),
        )

    def _rich(self, source: str) -> str:
        family = "ipv6" if source != ANY and ipaddress.ip_network(source).version == 6 else "ipv4"
        where = "" if source == ANY else f' source address="{source}"'
        return f'rule family="{family}"{where} service name="{self.service}" accept'

    def parse(self, outputs: Outputs) -> State:
        """The service's ports and the zone's rich rules that name it (runtime: what a reload left)."""
        ports_out = outputs[0] if outputs else None
        rich_out = outputs[1] if len(outputs) > 1 else None
        if rich_out is None:
            return State(readable=False, notes=("cannot ask firewalld",))
        ports = [p.split("/") for p in (ports_out or "").split() if "/" in p]
        sources = []
        for line in rich_out.splitlines():
            if f'service name="{self.service}"' in line and "accept" in line:
                found = re.search(r'source address="([^"]+)"', line)
                sources.append(str(ipaddress.ip_network(found.group(1), strict=False)) if found else ANY)
        present = {Rule(int(port), proto, source, TAG) for port, proto in ports for source in sources
                   if port.isdigit() and proto in ("tcp", "udp")}
        details = [("service",)] if ports_out is not None else []
        details += [("port", f"{p}/{proto}") for p, proto in ports] + [("source", s) for s in sources]
        return State(present=frozenset(present), details=tuple(details))

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan:
        """The permanent service, its ports and rich rules as wanted, then a reload to make them current."""
        fc = "firewall-cmd"
        permanent: list[Argv] = []
        if not state.detail("service"):
            permanent.append((fc, "--permanent", f"--new-service={self.service}"))
        have_ports = {p for (p,) in state.detail("port")}
        want_ports = {f"{r.port}/{r.protocol}" for r in wanted}
        have_sources = {s for (s,) in state.detail("source")}
        want_sources = {r.source for r in wanted}
        permanent += [(fc, "--permanent", f"--service={self.service}", f"--remove-port={p}")
                      for p in sorted(have_ports - want_ports)]
        permanent += [(fc, "--permanent", f"--service={self.service}", f"--add-port={p}")
                      for p in sorted(want_ports - have_ports)]
        permanent += [(fc, "--permanent", f"--zone={self.zone}", f"--remove-rich-rule={self._rich(s)}")
                      for s in sorted(have_sources - want_sources)]
        permanent += [(fc, "--permanent", f"--zone={self.zone}", f"--add-rich-rule={self._rich(s)}")
                      for s in sorted(want_sources - have_sources)]
        runtime: tuple[Argv, ...] = ((fc, "--reload"),) if permanent or {r.key for r in wanted} != {
            r.key for r in state.present} else ()
        # Names are not stored by firewalld: the plan's rules name what is present by port.
        named = State(present=frozenset(_named(state.present, wanted)), details=state.details,
                      readable=state.readable, notes=state.notes)
        return Plan(self.name, tuple(wanted), named, runtime=runtime, permanent=tuple(permanent),
                    remove=self._removal(state), check=self.check, permanent_first=True,
                    notes=("firewalld makes services only in its permanent configuration: a reload loads them",))

    def _removal(self, state: State) -> tuple[Argv, ...]:
        fc = "firewall-cmd"
        out: list[Argv] = [(fc, "--permanent", f"--zone={self.zone}", f"--remove-rich-rule={self._rich(s)}")
                           for (s,) in state.detail("source")]
        if state.detail("service"):
            out.append((fc, "--permanent", f"--delete-service={self.service}"))
        return (*out, (fc, "--reload")) if out else ()


def _named(present: frozenset[Rule], wanted: Sequence[Rule]) -> set[Rule]:
    names = {r.key: r.name for r in wanted}
    return {Rule(r.port, r.protocol, r.source, names.get(r.key, r.name)) for r in present}
