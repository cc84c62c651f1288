"""The LAN address rule (services/discovery/network.py) and the mDNS record (contracts/network.py): pure, by table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts.events import LanAddress
from contracts.network import Announcement, host_id, parse_txt, txt_record
from services.discovery import network as nw
from services.discovery.settings import DiscoverySettings

NOW = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.mark.parametrize(("interface", "up", "address", "reason"), [
    ("lo", True, "127.0.0.1", "loopback"),
    ("lo", True, "::1", "loopback"),
    ("eth0", True, "169.254.3.4", "link-local"),
    ("eth0", True, "fe80::1%eth0", "link-local"),
    ("eth0", False, "192.168.1.20", "interface down"),
    ("docker0", True, "172.17.0.1", "container or VM bridge"),
    ("br-4f2a", True, "172.18.0.1", "container or VM bridge"),
    ("virbr0", True, "192.168.122.1", "container or VM bridge"),
    ("veth12ab", True, "10.1.0.1", "container or VM bridge"),
    ("vboxnet0", True, "192.168.56.1", "container or VM bridge"),
    ("tun0", True, "10.8.0.2", "VPN"),
    ("wg0", True, "10.66.0.2", "VPN"),
    ("tailscale0", True, "100.101.102.103", "VPN"),
    ("eth0", True, "100.64.0.7", "VPN"),  # carrier-grade NAT: Tailscale's range, whatever the name
    ("utun3", True, "fd7a:115c:a1e0::1", "VPN"),
    ("eth0", True, "192.168.1.20", ""),
    ("wlp2s0", True, "10.0.0.5", ""),
    ("enp3s0", True, "2001:db8::5", ""),
    ("en0", True, "fd00::5", ""),
])
def test_each_address_is_usable_or_says_why_not(interface: str, up: bool, address: str, reason: str) -> None:
    assert nw.skip_reason(interface, up, address) == reason


def test_every_address_is_listed_marked_and_mac_addresses_are_ignored() -> None:
    listed = nw.classify([nw.Interface(name="eth0", addresses=("192.168.1.20", "aa:bb:cc:dd:ee:ff")),
                          nw.Interface(name="lo", addresses=("127.0.0.1",))])
    assert [(a.interface, a.address, a.family, a.skipped) for a in listed] == [
        ("eth0", "192.168.1.20", "ipv4", ""), ("lo", "127.0.0.1", "ipv4", "loopback")]


def addr(interface: str, address: str, skipped: str = "") -> LanAddress:
    return LanAddress(interface=interface, address=address, family="ipv6" if ":" in address else "ipv4",
                      skipped=skipped)


@pytest.mark.parametrize(("addresses", "before", "chosen"), [
    ([], None, None),
    ([addr("lo", "127.0.0.1", "loopback")], None, None),
    ([addr("eth0", "2001:db8::5"), addr("wlan0", "192.168.1.20")], None, "192.168.1.20"),  # IPv4 first
    ([addr("eth0", "81.2.69.160"), addr("eth1", "192.168.1.20")], None, "192.168.1.20"),  # private first
    ([addr("wlan0", "192.168.1.30"), addr("eth0", "192.168.1.20")], None, "192.168.1.20"),  # wired first
    ([addr("eth0", "2001:db8::5"), addr("eth0", "fd00::5")], None, "fd00::5"),  # ULA before global
    ([addr("eth0", "192.168.1.20"), addr("wlan0", "192.168.1.30")], "192.168.1.30", "192.168.1.30"),  # sticky
    ([addr("eth0", "192.168.1.20")], "192.168.1.30", "192.168.1.20"),  # the old one is gone
    ([addr("eth0", "192.168.1.20"), addr("docker0", "172.17.0.1", "container or VM bridge")], "172.17.0.1",
     "192.168.1.20"),  # a skipped one is never kept
])
def test_the_preferred_address_follows_the_documented_rule(addresses, before, chosen) -> None:
    assert nw.preferred(addresses, before) == chosen


def test_a_change_of_usable_or_preferred_addresses_is_one_event_and_nothing_else_is() -> None:
    first = nw.observe([nw.Interface(name="eth0", addresses=("192.168.1.20",)),
                        nw.Interface(name="lo", addresses=("127.0.0.1",))])
    [seen] = nw.decide_change("box", None, first, NOW)
    assert seen.old == () and seen.preferred == "192.168.1.20" and seen.old_preferred is None
    recorded = nw.evolve(None, seen)
    bridge_came = nw.observe([nw.Interface(name="eth0", addresses=("192.168.1.20",)),
                              nw.Interface(name="docker0", addresses=("172.17.0.1",))], recorded)
    assert nw.decide_change("box", recorded, bridge_came, NOW) == []  # a skipped address changes nothing
    moved = nw.observe([nw.Interface(name="eth0", addresses=("192.168.1.37",))], recorded)
    [change] = nw.decide_change("box", recorded, moved, NOW)
    assert (change.old_preferred, change.preferred) == ("192.168.1.20", "192.168.1.37")
    assert change.old == recorded.addresses and [a.address for a in change.new] == ["192.168.1.37"]


def view(*usable: str, preferred: str | None = None) -> nw.View:
    return nw.View(addresses=tuple(addr("eth0", a) for a in usable), preferred=preferred or usable[0])


@pytest.mark.parametrize(("listen", "hosts"), [
    ("127.0.0.1", []), ("localhost", []), ("::1", []),
    ("0.0.0.0", ["192.168.1.20", "10.0.0.5"]),
    ("::", ["192.168.1.20", "10.0.0.5", "fd00::5"]),
    ("10.0.0.5", ["10.0.0.5"]),
])
def test_where_other_machines_reach_a_server_depends_on_where_it_listens(listen: str, hosts: list[str]) -> None:
    assert nw.reachable_hosts(listen, view("192.168.1.20", "10.0.0.5", "fd00::5")) == hosts


FP = "ab" * 32


@pytest.mark.parametrize(("settings", "expected"), [
    (DiscoverySettings(nats_ports=(4222,), platform_id="P1"), None),  # NATS on loopback: nothing is told
    (DiscoverySettings(nats_listen="0.0.0.0", nats_ports=(4222,), platform_id="P1", mdns="off"), None),
    (DiscoverySettings(nats_listen="0.0.0.0", nats_ports=(4222,)), None),  # no platform id (not under `stoker up`)
    (DiscoverySettings(nats_listen="0.0.0.0", nats_ports=(4222, 4223), platform_id="P1"),
     (Announcement(platform_id="P1", nats_urls=("tls://192.168.1.20:4222", "tls://192.168.1.20:4223"),
                   ca_fingerprint=FP), ["192.168.1.20"], 4222)),
    (DiscoverySettings(nats_listen="0.0.0.0", nats_ports=(4222,), platform_id="P1", gateway_listen="0.0.0.0",
                       gateway_port=8000),
     (Announcement(platform_id="P1", nats_urls=("tls://192.168.1.20:4222",), gateway_url="http://192.168.1.20:8000",
                   ca_fingerprint=FP), ["192.168.1.20"], 4222)),
])
def test_what_is_announced(settings: DiscoverySettings, expected) -> None:
    assert nw.announcement(settings, view("192.168.1.20"), FP, "stoker") == expected


def test_the_txt_record_round_trips_and_refuses_strangers() -> None:
    record = Announcement(platform_id="P1", nats_urls=("tls://192.168.1.20:4222", "tls://[fd00::5]:4222"),
                          gateway_url="http://192.168.1.20:8000", ca_fingerprint=FP, prefix="lab")
    txt = {k.encode(): v.encode() for k, v in txt_record(record).items()}
    assert all(len(k) + 1 + len(v) <= 255 for k, v in txt.items())
    assert parse_txt(txt) == record
    with pytest.raises(ValueError, match="not a stoker record"):
        parse_txt({b"path": b"/"})
    with pytest.raises(ValueError, match="malformed"):
        parse_txt({**txt, b"ca": b"not hex"})
    many = Announcement(platform_id="P1", nats_urls=tuple(f"tls://192.168.1.{i}:4222" for i in range(40)))
    assert len(txt_record(many)["nats"]) <= 250  # what does not fit one TXT string is left out, whole URLs only
    assert parse_txt({k.encode(): v.encode() for k, v in txt_record(many).items()}).nats_urls[0] == many.nats_urls[0]


@pytest.mark.parametrize(("hostname", "expected"), [
    ("lab-box", "lab-box"), ("lab-box.local", "lab-box"), ("Büro PC", "B-ro-PC"), ("", "host"), ("...", "host")])
def test_a_host_name_becomes_an_aggregate_id(hostname: str, expected: str) -> None:
    assert host_id(hostname) == expected


def test_stoker_up_tells_discovery_alone_where_nats_and_the_gateway_listen(tmp_path) -> None:
    from eventstore.config import CommonSettings, load_settings
    from eventstore.credentials import CredentialStore
    from eventstore.server import cluster_nodes
    from gateway.settings import GatewaySettings
    from ops import cli  # noqa: F401 - first: importing ops.commands.platform alone is circular (it was before)
    from ops.commands.platform import lan_env, process_specs

    nodes = cluster_nodes(tmp_path / "c", 3, host="0.0.0.0")
    env = lan_env(nodes, True, GatewaySettings(host="0.0.0.0", port=8000), "P1")
    told = load_settings(DiscoverySettings, "discovery", env=env)
    ports = tuple(n.spec.port for n in nodes)
    assert (told.nats_listen, told.nats_ports, told.nats_scheme) == ("0.0.0.0", ports, "tls")
    assert (told.gateway_listen, told.gateway_port, told.platform_id) == ("0.0.0.0", 8000, "P1")
    specs = process_specs("tls://127.0.0.1:1", CommonSettings(data_dir=str(tmp_path)), 1, None,
                          CredentialStore(tmp_path), None, env)
    for spec in specs:
        assert ("STOKER_DISCOVERY_PLATFORM_ID" in spec.env) == (spec.name == "discovery"), spec.name


@pytest.mark.parametrize(("listen", "preferred", "public_url", "expected"), [
    ("127.0.0.1", "192.168.1.20", "", None),  # loopback only: no link, whatever the address
    ("0.0.0.0", None, "", None),  # nothing recorded yet
    ("0.0.0.0", "192.168.1.20", "", "http://192.168.1.20:8000"),
    ("::", "fd00::5", "", "http://[fd00::5]:8000"),
    ("10.0.0.5", "192.168.1.20", "", "http://10.0.0.5:8000"),  # bound to one address: that one
    ("127.0.0.1", None, "http://lab-box.local:8000/", "http://lab-box.local:8000"),  # the user said how
])
def test_where_a_phone_reaches_the_gateway(listen, preferred, public_url, expected) -> None:
    from gateway.phone import lan_base_url

    url, reason = lan_base_url(listen, 8000, preferred, public_url)
    assert url == expected and bool(reason) == (expected is None)
