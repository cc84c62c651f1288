"""The firewall planner, table-driven: rules, the LAN, detection, and every backend's commands and parsers."""

from __future__ import annotations

import json

import pytest

from services.firewall.__main__ import parse_listener
from services.firewall.backends import Facts, build, choose
from services.firewall.desktop import ANCHOR, SOCKETFILTERFW, MacFirewall, WindowsDefender
from services.firewall.domain import (
    ANY,
    Interface,
    Listener,
    PlanError,
    Rule,
    State,
    diff,
    lan_subnets,
    rules_for,
    shell,
)
from services.firewall.frontends import Firewalld, Ufw
from services.firewall.linux import Iptables, Nftables

LAN = "192.168.1.0/24"
GATEWAY = Rule(8000, "tcp", LAN, "gateway")
NATS = Rule(4222, "tcp", LAN, "nats")
WANTED = (NATS, GATEWAY)


def test_rules_open_what_listens_beyond_loopback_to_each_source() -> None:
    listeners = [Listener("gateway", "0.0.0.0", 8000), Listener("nats", "127.0.0.1", 4222),
                 Listener("nats-cluster", "::", 6222), Listener("local", "localhost", 9000)]
    assert rules_for(listeners, ["192.168.1.7/24", "10.0.0.0/8"]) == (
        Rule(6222, "tcp", "10.0.0.0/8", "nats-cluster"), Rule(6222, "tcp", LAN, "nats-cluster"),
        Rule(8000, "tcp", "10.0.0.0/8", "gateway"), Rule(8000, "tcp", LAN, "gateway"))
    assert rules_for([Listener("gateway", "0.0.0.0", 8000)], ["any"]) == (Rule(8000, "tcp", ANY, "gateway"),)


@pytest.mark.parametrize(("listeners", "sources", "says"), [
    ([Listener("gateway", "0.0.0.0", 8000)], [], "no source"),
    ([Listener("gateway", "0.0.0.0", 8000)], ["nowhere"], "not a network"),
    ([Listener("Gate way", "0.0.0.0", 8000)], [LAN], "lowercase"),
    ([Listener("gateway", "0.0.0.0", 70000)], [LAN], "not 1-65535"),
])
def test_bad_requests_say_what_to_change(listeners: list, sources: list, says: str) -> None:
    with pytest.raises(PlanError, match=says):
        rules_for(listeners, sources)


def test_the_lan_is_the_private_networks_of_real_interfaces() -> None:
    interfaces = [Interface(name, address, mask) for name, address, mask in (
        ("lo", "127.0.0.1", "255.0.0.0"), ("eth0", "192.168.1.23", "255.255.255.0"),
        ("wlan0", "192.168.1.40", "255.255.255.0"), ("docker0", "172.17.0.1", "255.255.0.0"),
        ("veth12ab", "10.1.0.1", "255.255.255.0"), ("tailscale0", "100.64.0.5", "255.192.0.0"),
        ("wg0", "10.8.0.2", "255.255.255.0"), ("eth0", "fe80::1%eth0", "ffff:ffff:ffff:ffff::"),
        ("eth1", "81.2.69.160", "255.255.255.0"), ("eth2", "10.20.0.4", "255.255.0.0"),
        ("en0", "fd00:1::5", "ffff:ffff:ffff:ffff::"), ("ppp0", "10.64.0.2", None))]
    assert lan_subnets(interfaces) == (LAN, "10.20.0.0/16", "fd00:1::/64")


@pytest.mark.parametrize(("facts", "backend"), [
    (Facts(os="linux", firewalld_running=True, ufw_active=True, nft=True, iptables=True), "firewalld"),
    (Facts(os="linux", ufw_active=True, nft=True, iptables=True), "ufw"),
    (Facts(os="linux", nft=True, iptables=True), "nftables"),
    (Facts(os="linux", iptables=True), "iptables"),
    (Facts(os="linux"), None),
    (Facts(os="windows"), "windows"),
    (Facts(os="darwin"), "macos"),
])
def test_detection_order(facts: Facts, backend: str | None) -> None:
    assert choose(facts) == backend


def test_unknown_backend_is_one_clear_error() -> None:
    with pytest.raises(PlanError, match="unknown firewall backend 'pf'"):
        build("pf", Facts(os="linux"))


# The commands each backend plans from an empty state, as a person would type them.
FRESH = {
    "nftables": [
        "nft insert rule inet filter input ip saddr 192.168.1.0/24 tcp dport 4222 counter accept comment "
        "'\"stoker nats\"'",
        "nft insert rule inet filter input ip saddr 192.168.1.0/24 tcp dport 8000 counter accept comment "
        "'\"stoker gateway\"'",
    ],
    "iptables": [
        "iptables -N stoker",
        "iptables -A stoker -s 192.168.1.0/24 -p tcp -m tcp --dport 4222 -m comment --comment 'stoker nats' -j ACCEPT",
        "iptables -A stoker -s 192.168.1.0/24 -p tcp -m tcp --dport 8000 -m comment --comment 'stoker gateway' "
        "-j ACCEPT",
        "iptables -I INPUT 1 -m comment --comment stoker -j stoker",
    ],
    "ufw": [
        "ufw allow from 192.168.1.0/24 to any port 4222 proto tcp comment 'stoker nats'",
        "ufw allow from 192.168.1.0/24 to any port 8000 proto tcp comment 'stoker gateway'",
    ],
    "firewalld": [
        "firewall-cmd --permanent --new-service=stoker",
        "firewall-cmd --permanent --service=stoker --add-port=4222/tcp",
        "firewall-cmd --permanent --service=stoker --add-port=8000/tcp",
        "firewall-cmd --permanent --zone=home "
        "'--add-rich-rule=rule family=\"ipv4\" source address=\"192.168.1.0/24\" service name=\"stoker\" accept'",
        "firewall-cmd --reload",
    ],
}
NFT_EMPTY_CHAIN = json.dumps({"nftables": [
    {"table": {"family": "inet", "name": "filter", "handle": 1}},
    {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}}]})
EMPTY_OUTPUTS = {"nftables": [NFT_EMPTY_CHAIN], "iptables": [None, "-P INPUT DROP\n"], "ufw": ["Status: active\n"],
                 "firewalld": [None, ""]}


@pytest.mark.parametrize("name", sorted(FRESH))
def test_linux_backends_plan_exact_commands_from_nothing(name: str) -> None:
    backend = build(name, Facts(os="linux", zone="home"))
    plan = backend.plan(WANTED, backend.parse(EMPTY_OUTPUTS[name]))
    assert [shell(c) for c in plan.commands] == FRESH[name]
    assert plan.missing == WANTED and not plan.remove
    assert diff(plan) == [f"+ {NATS.describe()}", f"+ {GATEWAY.describe()}"]


NFT_STATE = json.dumps({"nftables": [
    {"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "inet", "name": "filter", "handle": 1}},
    {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 2, "type": "filter",
               "hook": "forward", "prio": 0, "policy": "drop"}},
    {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "comment": "stoker gateway",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                  "right": {"prefix": {"addr": "192.168.1.0", "len": 24}}}},
                       {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                  "right": 8000}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}]}},
    {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "comment": "ssh for me",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                  "right": 22}}, {"accept": None}]}},
]})
IPT_CHAIN = ('-N stoker\n-A stoker -s 192.168.1.0/24 -p tcp -m tcp --dport 8000 -m comment --comment "stoker gateway" '
             "-j ACCEPT\n")
IPT_INPUT = ("-P INPUT DROP\n-A INPUT -m comment --comment stoker -j stoker\n"
             "-A INPUT -p tcp -m tcp --dport 22 -m comment --comment \"stoker-like but mine\" -j ACCEPT\n")
UFW_STATUS = """Status: active

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW       Anywhere
8000/tcp                   ALLOW       192.168.1.0/24             # stoker gateway
9000/tcp                   ALLOW       10.0.0.0/8                 # my own thing
22/tcp (v6)                ALLOW       Anywhere (v6)
"""
FIREWALLD = ["8000/tcp\n", 'rule family="ipv4" source address="192.168.1.0/24" service name="stoker" accept\n'
             'rule family="ipv4" source address="10.9.0.0/16" service name="ssh" accept\n']
# name: (outputs with stoker's gateway rule and someone else's, the exact removal)
PRESENT = {
    "nftables": ([NFT_STATE], ["nft delete rule inet filter input handle 7"]),
    "iptables": ([IPT_CHAIN, IPT_INPUT], ["iptables -D INPUT -m comment --comment stoker -j stoker",
                                          "iptables -F stoker", "iptables -X stoker"]),
    "ufw": ([UFW_STATUS], ["ufw delete allow from 192.168.1.0/24 to any port 8000 proto tcp"]),
    "firewalld": (FIREWALLD, ["firewall-cmd --permanent --zone=home '--remove-rich-rule=rule family=\"ipv4\" "
                              "source address=\"192.168.1.0/24\" service name=\"stoker\" accept'",
                              "firewall-cmd --permanent --delete-service=stoker", "firewall-cmd --reload"]),
}


@pytest.mark.parametrize("name", sorted(PRESENT))
def test_linux_backends_read_their_rules_and_remove_exactly_them(name: str) -> None:
    outputs, removal = PRESENT[name]
    backend = build(name, Facts(os="linux", zone="home"))
    state = backend.parse(outputs)
    assert {r.key for r in state.present} == {GATEWAY.key}
    plan = backend.plan(WANTED, state)
    assert [shell(c) for c in plan.remove] == removal
    assert plan.missing == (NATS,) and not plan.stale
    assert diff(plan) == [f"+ {NATS.describe()}", f"  {GATEWAY.describe()}"]
    text = " ".join(plan.remove[0])
    assert "ssh" not in text and "22" not in text.split() and "9000" not in text


def test_nftables_replaces_a_stale_rule_by_handle() -> None:
    backend = Nftables()
    moved = Rule(8001, "tcp", LAN, "gateway")
    plan = backend.plan((moved,), backend.parse([NFT_STATE]))
    assert plan.stale == (GATEWAY,) and plan.missing == (moved,)
    assert [shell(c) for c in plan.runtime] == [
        "nft delete rule inet filter input handle 7",
        "nft insert rule inet filter input ip saddr 192.168.1.0/24 tcp dport 8001 counter accept comment "
        "'\"stoker gateway\"'"]
    assert diff(plan) == [f"+ {moved.describe()}", f"- {GATEWAY.describe()}"]


def test_nftables_opens_in_every_input_chain_that_sees_the_source() -> None:
    # iptables-nft's `ip filter INPUT` beside the host's own `inet filter input`: a drop in either would win.
    items = json.loads(NFT_STATE)["nftables"] + [
        {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}}]
    backend = Nftables()
    v6 = Rule(8000, "tcp", "fd00:1::/64", "gateway")
    plan = backend.plan((GATEWAY, v6), backend.parse([json.dumps({"nftables": items})]))
    assert plan.missing == (GATEWAY, v6) and not plan.stale  # 8000 from the LAN is only in one of the two
    assert [shell(c) for c in plan.runtime] == [
        "nft insert rule ip filter INPUT ip saddr 192.168.1.0/24 tcp dport 8000 counter accept comment "
        "'\"stoker gateway\"'",
        "nft insert rule inet filter input ip6 saddr fd00:1::/64 tcp dport 8000 counter accept comment "
        "'\"stoker gateway\"'"]  # an `ip` table never sees IPv6 packets


def test_nftables_without_an_input_chain_has_nothing_to_open() -> None:
    backend = Nftables()
    plan = backend.plan(WANTED, backend.parse([json.dumps({"nftables": [{"metainfo": {}}]})]))
    assert plan.commands == () and plan.in_place and any("nothing blocks" in n for n in plan.notes)


def test_an_unreadable_state_plans_everything_and_says_so() -> None:
    for backend in (Nftables(), Iptables(), Ufw(), Firewalld()):
        state = backend.parse([None, None])
        assert not state.readable and state.notes
        assert backend.plan(WANTED, state).missing == WANTED


def test_iptables_saves_where_netfilter_persistent_is_there() -> None:
    backend = Iptables(persist=True)
    plan = backend.plan(WANTED, backend.parse([IPT_CHAIN, IPT_INPUT]))
    assert plan.permanent == (("netfilter-persistent", "save"),)
    assert plan.remove[-1] == ("netfilter-persistent", "save")


def test_ufw_deletes_a_stale_rule_and_keeps_others() -> None:
    backend = Ufw()
    plan = backend.plan((NATS,), backend.parse([UFW_STATUS]))
    assert [shell(c) for c in plan.runtime] == [
        "ufw delete allow from 192.168.1.0/24 to any port 8000 proto tcp",
        "ufw allow from 192.168.1.0/24 to any port 4222 proto tcp comment 'stoker nats'"]


WINDOWS_RULE = ("New-NetFirewallRule -Name 'stoker-gateway-8000-tcp-192.168.1.0_24' -DisplayName 'stoker gateway' "
                "-Group stoker -Direction Inbound -Action Allow -Protocol TCP -LocalPort 8000 "
                "-RemoteAddress 192.168.1.0/24 -Profile Domain,Private")


def test_windows_plans_powershell_rules_in_the_stoker_group() -> None:
    backend = WindowsDefender()
    plan = backend.plan((GATEWAY,), backend.parse([""]))
    assert [c[-1] for c in plan.commands] == [WINDOWS_RULE]
    assert plan.commands[0][:4] == ("powershell", "-NoProfile", "-NonInteractive", "-Command")
    assert "Get-NetFirewallRule -Group stoker" in backend.check[0][-1] and plan.remove == ()


def test_windows_reads_its_group_and_removes_only_it() -> None:
    backend = WindowsDefender()
    listed = ("stoker-gateway-8000-tcp-192.168.1.0_24|stoker gateway|TCP|8000|192.168.1.0/255.255.255.0\n"
              "stoker-old-9000-tcp-any|stoker old|TCP|9000|Any\n")
    plan = backend.plan(WANTED, backend.parse([listed]))
    assert {r.key for r in plan.state.present} == {GATEWAY.key, (9000, "tcp", ANY)}
    assert plan.stale == (Rule(9000, "tcp", ANY, "old"),)
    assert [c[-1] for c in plan.runtime] == [
        "Remove-NetFirewallRule -Name 'stoker-old-9000-tcp-any'",
        WINDOWS_RULE.replace("gateway", "nats").replace("8000", "4222")]
    assert [c[-1] for c in plan.remove] == ["Remove-NetFirewallRule -Group stoker"]


def test_macos_allows_python_and_loads_the_pf_anchor() -> None:
    backend = MacFirewall("/opt/py/bin/python3.12", pf_enabled=True)
    state = backend.parse(["Firewall is enabled. (State = 1)", "The application is blocked.", ""])
    plan = backend.plan((GATEWAY,), state)
    assert [shell(c) for c in plan.commands] == [
        f"{SOCKETFILTERFW} --add /opt/py/bin/python3.12", f"{SOCKETFILTERFW} --unblockapp /opt/py/bin/python3.12",
        "sh -c 'printf '\"'\"'%s\\n'\"'\"' '\"'\"'pass in quick inet proto tcp from 192.168.1.0/24 to any port "
        "8000 keep state label \"stoker gateway\"'\"'\"' | pfctl -a com.apple/stoker -f -'"]
    assert backend.check[-1] == ("pfctl", "-a", ANCHOR, "-sr")


def test_macos_reads_the_anchor_and_removes_only_it() -> None:
    backend = MacFirewall("/usr/bin/python3", pf_enabled=True)
    pf = ('pass in quick inet proto tcp from 192.168.1.0/24 to any port = 8000 flags S/SA keep state '
          'label "stoker gateway"\n')
    state = backend.parse(["Firewall is enabled. (State = 1)", "Incoming connection to the application is permitted",
                           pf])
    plan = backend.plan((GATEWAY,), state)
    assert plan.in_place and plan.commands == ()
    assert [shell(c) for c in plan.remove] == ["pfctl -a com.apple/stoker -F rules",
                                               f"{SOCKETFILTERFW} --remove /usr/bin/python3"]


def test_macos_without_pf_counts_on_the_application_firewall() -> None:
    backend = MacFirewall("/usr/bin/python3", pf_enabled=False)
    permitted = backend.parse(["Firewall is enabled. (State = 1)", "The application is permitted"])
    assert backend.plan(WANTED, permitted).in_place
    assert backend.plan(WANTED, backend.parse(["Firewall is enabled.", "blocked"])).missing == WANTED


def test_plans_do_not_depend_on_state_details_order() -> None:
    a = State(present=frozenset({GATEWAY}), details=(("x", "1"),))
    assert a.detail("x") == [("1",)] and a.detail("y") == []


@pytest.mark.parametrize(("text", "listener"), [
    ("gateway=0.0.0.0:8000", Listener("gateway", "0.0.0.0", 8000)),
    ("nats=[::]:4222", Listener("nats", "::", 4222)),
    ("nats-route-0=192.168.1.5:6222", Listener("nats-route-0", "192.168.1.5", 6222)),
])
def test_listeners_are_given_as_name_host_port(text: str, listener: Listener) -> None:
    assert parse_listener(text) == listener


@pytest.mark.parametrize("text", ["gateway", "gateway=8000", "=0.0.0.0:80", "gateway=0.0.0.0:http"])
def test_a_bad_listener_is_one_clear_error(text: str) -> None:
    with pytest.raises(PlanError, match="expected NAME=HOST:PORT"):
        parse_listener(text)
