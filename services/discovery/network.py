"""Which of this machine's addresses other machines (and phones) should use, and when that changed. Pure.

Input is what the interface source reports (psutil.net_if_addrs and net_if_stats, read by
services/discovery/lan.py); output is every address, marked with why it is skipped, and one preferred.

Skipped, but listed: loopback, link-local (169.254/16, fe80::/10: not routed, and a phone cannot use a
scope id), interfaces that are down, container and VM bridges (docker*, br-*, veth*, virbr*, cni*,
podman*, lxc*/lxdbr*, vboxnet*, vmnet*, flannel*, cali*, ...: only this machine's guests see them) and
VPN-looking ones (tun*, tap*, wg*, utun*, ppp*, tailscale*, zt*, ipsec*, nordlynx, and 100.64.0.0/10,
the carrier-grade NAT range Tailscale hands out: reachable from the VPN, not from the LAN's phone).

The preferred address, in this order:
1. the one preferred before, while it is still usable (no flapping between two good ones);
2. IPv4 before IPv6 (a phone types and scans `http://192.168.1.20:8000` more reliably than a bracketed IPv6);
3. private ranges (RFC 1918 for IPv4, ULA fc00::/7 for IPv6) before public ones: a LAN is what we serve;
4. wired-looking names (eth*, en*) before wireless (wl*) before others, then interface name and address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from contracts.events import LanAddress, NetworkChanged
from contracts.network import Announcement

BRIDGE_PREFIXES = ("docker", "br-", "veth", "virbr", "cni", "podman", "lxc", "lxdbr", "vboxnet", "vmnet", "flannel",
                   "cali", "weave", "kube", "vethernet", "vEthernet")
VPN_PREFIXES = ("tun", "tap", "wg", "utun", "ppp", "tailscale", "zt", "ipsec", "nordlynx", "gpd", "vpn")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
ULA = ipaddress.ip_network("fc00::/7")
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class Interface(msgspec.Struct, frozen=True, kw_only=True):
    """One interface as the source reports it: its name, whether it is up, its IP addresses."""

    name: str
    up: bool = True
    addresses: tuple[str, ...] = ()


class View(msgspec.Struct, frozen=True, kw_only=True):
    """What was last recorded for a machine: every address (marked) and the preferred one."""

    addresses: tuple[LanAddress, ...] = ()
    preferred: str | None = None

    @property
    def usable(self) -> frozenset[str]:
        """The addresses offered to other machines."""
        return frozenset(a.address for a in self.addresses if not a.skipped)


def skip_reason(interface: str, up: bool, address: str) -> str:
    """Why an address is not offered ("" when it is)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    name = interface.lower()
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast or ip.is_unspecified:
        return "not a host address"
    if not up:
        return "interface down"
    if name.startswith(tuple(p.lower() for p in BRIDGE_PREFIXES)):
        return "container or VM bridge"
    if name.startswith(VPN_PREFIXES) or (ip.version == 4 and ip in CGNAT):
        return "VPN"
    return ""


def classify(interfaces: Iterable[Interface]) -> tuple[LanAddress, ...]:
    """Every IP address of every interface, marked, in a stable order (interface name, then address)."""
    out = []
    for interface in sorted(interfaces, key=lambda i: i.name):
        for address in sorted(set(interface.addresses)):
            try:
                reason = skip_reason(interface.name, interface.up, address)
            except ValueError:
                continue  # not an IP address (psutil reports MAC addresses too)
            family = "ipv6" if ":" in address else "ipv4"
            out.append(LanAddress(interface=interface.name[:64], address=address[:64], family=family,
                                  skipped=reason))
    return tuple(out)


def _rank(address: LanAddress) -> tuple:
    ip = ipaddress.ip_address(address.address.split("%")[0])
    private = ip in ULA if ip.version == 6 else any(ip in net for net in RFC1918)
    name = address.interface.lower()
    kind = 0 if name.startswith(("eth", "en")) else 1 if name.startswith(("wl", "wi")) else 2
    return (ip.version != 4, not private, kind, address.interface, ip.packed)


def preferred(addresses: Sequence[LanAddress], before: str | None = None) -> str | None:
    """The address to give out (the module's rule); None when no address is usable."""
    usable = [a for a in addresses if not a.skipped]
    if before is not None and any(a.address == before for a in usable):
        return before
    return min(usable, key=_rank).address if usable else None


def observe(interfaces: Iterable[Interface], before: View | None = None) -> View:
    """The view the interfaces give now, keeping the earlier preference where it still holds."""
    addresses = classify(interfaces)
    return View(addresses=addresses, preferred=preferred(addresses, before.preferred if before else None))


def decide_change(host: str, before: View | None, now_view: View, now: datetime) -> list[NetworkChanged]:
    """A NetworkChanged when the usable addresses or the preferred one changed (or nothing was recorded yet)."""
    if before is not None and before.usable == now_view.usable and before.preferred == now_view.preferred:
        return []
    return [NetworkChanged(host=host, old=before.addresses if before else (), new=now_view.addresses,
                           old_preferred=before.preferred if before else None, preferred=now_view.preferred,
                           changed_at=now)]


def evolve(before: View | None, event: NetworkChanged) -> View:
    """The view after a recorded change."""
    return View(addresses=event.new, preferred=event.preferred)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reachable_hosts(listen: str, view: View) -> list[str]:
    """Where another machine reaches a server listening on `listen`: every usable address, the preferred first,
    when it listens on all of them; the listen address itself otherwise; nothing when it listens on loopback."""
    if _is_loopback(listen.strip("[]")):
        return []
    if listen in ("0.0.0.0", "::", "[::]", ""):
        ordered = sorted(view.usable, key=lambda a: (a != view.preferred, ":" in a, a))
        return [a for a in ordered if listen != "0.0.0.0" or ":" not in a]
    return [listen.strip("[]")]


def url(scheme: str, host: str, port: int) -> str:
    """`scheme://host:port`, with IPv6 addresses in brackets."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def announcement(settings, view: View, fingerprint: str, prefix: str) -> tuple[Announcement, list[str], int] | None:
    """What to announce on mDNS for these (discovery) settings and view: the record, its addresses, the SRV port
    (NATS's first); None when nothing should be (mDNS off, NATS on loopback only, no usable address, no id)."""
    hosts = reachable_hosts(settings.nats_listen, view)
    if settings.mdns == "off" or not hosts or not settings.nats_ports or not settings.platform_id:
        return None
    gateway_hosts = reachable_hosts(settings.gateway_listen, view) if settings.gateway_port else []
    record = Announcement(
        platform_id=settings.platform_id, prefix=prefix, ca_fingerprint=fingerprint,
        nats_urls=tuple(url(settings.nats_scheme, h, p) for h in hosts for p in settings.nats_ports),
        gateway_url=url("http", gateway_hosts[0], settings.gateway_port) if gateway_hosts else None)
    return record, hosts, settings.nats_ports[0]
