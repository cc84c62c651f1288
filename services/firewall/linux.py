"""Linux's netfilter backends as pure functions: the commands that read each, how their output reads, the plan.

nftables: rules commented `stoker <name>` at the top of every input base chain (see `Nftables`). iptables: a
`stoker` chain jumped from INPUT. The managers on top of them (firewalld, ufw) are in `frontends.py`.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Sequence

from services.firewall.domain import ANY, TAG, Argv, Plan, Rule, State

Outputs = Sequence[str | None]  # each check command's stdout, None where it failed


def name_from(comment: str) -> str | None:
    """The listener name of a `stoker <name>` comment; None for anyone else's comment."""
    parts = comment.strip().split()
    if not parts or parts[0] != TAG:
        return None
    return parts[1] if len(parts) > 1 else TAG


def comment_of(rule: Rule) -> str:
    return f"{TAG} {rule.name}"


class Nftables:
    """nftables: an accept rule per opening, commented `stoker <name>`, first in every input base chain.

    nftables runs every base chain on a hook, and a drop in any of them is final: an accept in a table of
    stoker's own could not open a port that the host's own input chain drops. So the rules go into the
    chains that filter input (any family `inet`, `ip` or `ip6`), each tagged; removal deletes exactly the
    tagged rules by their handles. Where no chain filters input, nothing blocks the ports: there is nothing
    to add.
    """

    name = "nftables"
    check: tuple[Argv, ...] = (("nft", "-j", "list", "ruleset"),)

    def parse(self, outputs: Outputs) -> State:
        """Stoker's rules (with their handles) and the input base chains, from `nft -j list ruleset`.

        A rule counts as present when every input chain that can see its packets holds it (a drop in the
        one that lacks it would win); a rule of stoker's that is not wanted counts wherever it is (to go).
        """
        if not outputs or outputs[0] is None:
            return State(readable=False, notes=("cannot read the nftables ruleset",))
        try:
            items = json.loads(outputs[0]).get("nftables", [])
        except (ValueError, AttributeError):
            return State(readable=False, notes=("`nft -j list ruleset` did not print JSON",))
        details: list[tuple[str, ...]] = []
        found: dict[tuple[str, str, str], set[Rule]] = {}
        for item in items:
            chain, rule = item.get("chain"), item.get("rule")
            if chain and chain.get("hook") == "input" and chain.get("family") in ("inet", "ip", "ip6"):
                details.append(("chain", chain["family"], chain["table"], chain["name"]))
                found.setdefault((chain["family"], chain["table"], chain["name"]), set())
            name = name_from(rule.get("comment", "")) if rule else None
            if rule and name:
                parsed = _nft_rule(rule.get("expr", []), name)
                where = (rule["family"], rule["table"], rule["chain"])
                details.append(("rule", *where, str(rule["handle"]), _rule_text(parsed)))
                if parsed:
                    found.setdefault(where, set()).add(parsed)
        chains = [tuple(d[1:]) for d in details if d[0] == "chain"]
        candidates = set().union(*found.values()) if found else set()
        present = {r for r in candidates
                   if all(r.key in {f.key for f in found.get(c, set())} for c in chains if _sees(c[0], r))}
        return State(present=frozenset(present), details=tuple(details))

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan:
        """Delete stoker's rules that are not wanted (by handle); insert each wanted one where it is missing."""
        chains = state.detail("chain")
        notes = []
        if state.readable and not chains:
            open_state = State(present=frozenset(wanted), details=state.details, notes=state.notes)
            return Plan(self.name, tuple(wanted), open_state, remove=self._removal(state), check=self.check,
                        notes=("no nftables chain filters incoming traffic here: nothing blocks the ports",))
        if not state.readable:
            chains = [("inet", "filter", "input")]
            notes.append("assumed the usual `inet filter input` chain (the ruleset could not be read)")
        wanted_text = {_rule_text(r): r for r in wanted}
        rules = state.detail("rule")
        runtime: list[Argv] = [("nft", "delete", "rule", f, t, c, "handle", h)
                               for f, t, c, h, text in rules if text not in wanted_text]
        for rule in wanted:
            holders = {(f, t, c) for f, t, c, _h, text in rules if text == _rule_text(rule)}
            runtime += [_nft_insert(*chain, rule) for chain in chains
                        if _sees(chain[0], rule) and tuple(chain) not in holders]
        return Plan(self.name, tuple(wanted), state, runtime=tuple(runtime), remove=self._removal(state),
                    check=self.check, notes=(*notes, "nftables rules are runtime only: a reload or a reboot wipes "
                                             "them; `stoker firewall status` shows it, `apply` puts them back"))

    def _removal(self, state: State) -> tuple[Argv, ...]:
        return tuple(("nft", "delete", "rule", family, table, chain, "handle", handle)
                     for family, table, chain, handle, _text in state.detail("rule"))


def _sees(family: str, rule: Rule) -> bool:
    """Whether a chain of this nftables family sees the packets of the rule's source."""
    return rule.source == ANY or (family, rule.family) not in (("ip", 6), ("ip6", 4))


def _rule_text(rule: Rule | None) -> str:
    return "" if rule is None else f"{rule.port}/{rule.protocol} {rule.source}"


def _nft_insert(family: str, table: str, chain: str, rule: Rule) -> Argv:
    match: Argv = ()
    if rule.source != ANY:
        match = ("ip" if rule.family == 4 else "ip6", "saddr", rule.source)
    return ("nft", "insert", "rule", family, table, chain, *match, rule.protocol, "dport", str(rule.port),
            "counter", "accept", "comment", f'"{comment_of(rule)}"')


def _nft_rule(exprs: list, name: str) -> Rule | None:
    source, port, protocol, accepts = ANY, None, None, False
    for expr in exprs:
        if "accept" in expr:
            accepts = True
        match = expr.get("match") if isinstance(expr, dict) else None
        if not match or match.get("op") != "==":
            continue
        payload = (match.get("left") or {}).get("payload") or {}
        right = match.get("right")
        if payload.get("field") == "saddr" and payload.get("protocol") in ("ip", "ip6"):
            prefix = right.get("prefix") if isinstance(right, dict) else None
            source = str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}" if prefix else str(right)))
        elif payload.get("field") == "dport" and isinstance(right, int):
            port, protocol = right, payload.get("protocol")
    if not accepts or port is None or protocol not in ("tcp", "udp"):
        return None
    return Rule(port, protocol, source, name)


class Iptables:
    """iptables: a `stoker` chain of accept rules (commented `stoker <name>`), jumped to first from INPUT."""

    name = "iptables"
    chain = TAG
    check: tuple[Argv, ...] = (("iptables", "-S", TAG), ("iptables", "-S", "INPUT"))

    def __init__(self, persist: bool = False) -> None:
        self.persist = persist  # netfilter-persistent is there to save the rules for the next boot

    def parse(self, outputs: Outputs) -> State:
        """The chain's rules and whether INPUT jumps to it, from `iptables -S stoker` and `iptables -S INPUT`."""
        chain_out = outputs[0] if outputs else None
        input_out = outputs[1] if len(outputs) > 1 else None
        if input_out is None:
            return State(readable=False, notes=("cannot read iptables' rules",))
        present, details = set(), []
        for line in (chain_out or "").splitlines():
            words = shlex.split(line)
            if words[:1] == ["-N"]:
                details.append(("chain",))
            elif words[:2] == ["-A", self.chain]:
                details.append(("rule", line))
                rule = _ipt_rule(words)
                if rule:
                    present.add(rule)
        for line in input_out.splitlines():
            words = shlex.split(line)
            if words[:2] == ["-A", "INPUT"] and words[-2:] == ["-j", self.chain]:
                details.append(("jump", line))
        return State(present=frozenset(present), details=tuple(details))

    def plan(self, wanted: Sequence[Rule], state: State) -> Plan:
        """Make the chain if missing, drop stale rules, append missing ones, jump to it from INPUT if not yet."""
        runtime: list[Argv] = []
        if not state.detail("chain"):
            runtime.append(("iptables", "-N", self.chain))
        wanted_keys = {r.key for r in wanted}
        for (line,) in state.detail("rule"):
            rule = _ipt_rule(shlex.split(line))
            if rule is None or rule.key not in wanted_keys:
                runtime.append(("iptables", "-D", *shlex.split(line)[1:]))
        present = {r.key for r in state.present}
        notes = []
        for rule in wanted:
            if rule.family == 6:
                notes.append(f"{rule.describe()}: IPv6 is ip6tables' (not planned by this backend)")
            elif rule.key not in present:
                source = () if rule.source == ANY else ("-s", rule.source)
                runtime.append(("iptables", "-A", self.chain, *source, "-p", rule.protocol, "-m", rule.protocol,
                                "--dport", str(rule.port), "-m", "comment", "--comment", comment_of(rule), "-j",
                                "ACCEPT"))
        if not state.detail("jump"):
            runtime.append(("iptables", "-I", "INPUT", "1", "-m", "comment", "--comment", TAG, "-j", self.chain))
        permanent: tuple[Argv, ...] = (("netfilter-persistent", "save"),) if self.persist else ()
        if not self.persist:
            notes.append("iptables rules are runtime only here (no netfilter-persistent): after a reboot or a "
                         "reload, `stoker firewall apply` again")
        return Plan(self.name, tuple(wanted), state, runtime=tuple(runtime), permanent=permanent,
                    remove=self._removal(state), check=self.check, notes=tuple(notes))

    def _removal(self, state: State) -> tuple[Argv, ...]:
        jumps = tuple(("iptables", "-D", *shlex.split(line)[1:]) for (line,) in state.detail("jump"))
        chain = (("iptables", "-F", self.chain), ("iptables", "-X", self.chain)) if state.detail("chain") else ()
        return jumps + chain + ((("netfilter-persistent", "save"),) if self.persist and (jumps or chain) else ())


def _ipt_rule(words: list[str]) -> Rule | None:
    def value(flag: str) -> str | None:
        return words[words.index(flag) + 1] if flag in words and words.index(flag) + 1 < len(words) else None

    name, port, protocol = name_from(value("--comment") or ""), value("--dport"), value("-p")
    if not name or not port or not port.isdigit() or protocol not in ("tcp", "udp") or value("-j") != "ACCEPT":
        return None
    source = value("-s")
    return Rule(int(port), protocol, str(ipaddress.ip_network(source)) if source else ANY, name)
