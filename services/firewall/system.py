"""The thin part: run a backend's commands (bounded), read its state, learn the machine's facts and LAN."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from services.firewall.backends import Backend, Facts
from services.firewall.domain import Argv, Interface, State

TIMEOUT_S = 15.0  # a firewall command that takes longer is stuck (a firewalld waiting on D-Bus, say)


@dataclass(frozen=True)
class Ran:
    """One command's outcome."""

    argv: Argv
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether it exited 0."""
        return self.code == 0


def run(argv: Argv, timeout: float = TIMEOUT_S) -> Ran:
    """Run one command without a shell, its output captured; a missing binary or a timeout is a failure."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Ran(argv, 127, "", f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return Ran(argv, 124, "", f"{argv[0]}: no answer within {timeout:g} s")
    except OSError as exc:
        return Ran(argv, 126, "", f"{argv[0]}: {exc}")
    return Ran(argv, done.returncode, done.stdout, done.stderr)


def read_state(backend: Backend) -> State:
    """Run the backend's check commands and parse what they print (None for each that failed); where the state
    could not be read, the first failure's own words are added to its notes."""
    results = [run(argv) for argv in backend.check]
    state = backend.parse([result.stdout if result.ok else None for result in results])
    failed = next((r for r in results if not r.ok), None)
    if state.readable or failed is None:
        return state
    why = (failed.stderr.strip() or f"exit {failed.code}").splitlines()[-1][:200]
    return dataclasses.replace(state, notes=(*state.notes, f"`{failed.argv[0]}` said: {why}"))


def run_all(commands: Sequence[Argv]) -> list[Ran]:
    """Run commands in order, stopping at the first that fails (the rest would build on it)."""
    results = []
    for argv in commands:
        results.append(run(argv))
        if not results[-1].ok:
            break
    return results


def is_admin() -> bool:
    """Whether this process may change the firewall (root; an elevated process on Windows)."""
    if os.name == "nt":
        import ctypes

        try:
            return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            return False
    return os.geteuid() == 0


def interfaces() -> list[Interface]:
    """Every IPv4 and IPv6 address of every interface that is up, with its netmask."""
    stats = psutil.net_if_stats()
    out = []
    for name, addresses in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        out += [Interface(name, a.address, a.netmask) for a in addresses
                if a.family in (socket.AF_INET, socket.AF_INET6) and a.address]
    return out


def gather_facts() -> Facts:
    """What this machine says about its firewalls (each probe bounded and harmless)."""
    system = platform.system().lower()
    if system == "windows":
        return Facts(os="windows")
    if system == "darwin":
        pf = run(("pfctl", "-s", "info"), timeout=5.0)
        return Facts(os="darwin", python=os.path.realpath(sys.executable),
                     pf_enabled=pf.ok and "Status: Enabled" in pf.stdout)
    firewalld = shutil.which("firewall-cmd") is not None and run(("firewall-cmd", "--state"), 5.0).ok
    zone = run(("firewall-cmd", "--get-default-zone"), 5.0).stdout.strip() if firewalld else ""
    ufw = shutil.which("ufw") is not None and "Status: active" in run(("ufw", "status"), 5.0).stdout
    return Facts(os="linux", firewalld_running=firewalld, ufw_active=ufw, nft=shutil.which("nft") is not None,
                 iptables=shutil.which("iptables") is not None,
                 netfilter_persistent=shutil.which("netfilter-persistent") is not None, zone=zone or "public",
                 python=os.path.realpath(sys.executable))
