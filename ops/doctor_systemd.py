"""`stoker doctor`'s probes of the service manager: stoker's systemd unit (user and system) and linger."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ops import doctor_domain as dd
from ops import doctor_rules as rules

UNIT = "stoker.service"  # the unit `stoker service install` writes (user or system)


def systemd_absent() -> str:
    """Why the service checks cannot look here ("" when systemd runs and can be asked)."""
    if not sys.platform.startswith("linux"):
        return f"only systemd is probed so far, and this is {sys.platform}"
    if shutil.which("systemctl") is None:
        return "no systemctl on this machine"
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not running here (PID 1 is not systemd: a container?)"
    return ""


def unit_facts(user: bool) -> rules.ServiceFacts:
    """`systemctl [--user] show stoker.service`."""
    manager = "systemd --user" if user else "systemd"
    argv = ["systemctl", *(["--user"] if user else []), "show", UNIT,
            "-p", "LoadState,UnitFileState,ActiveState,SubState,NRestarts"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return rules.ServiceFacts(manager=manager, unit=UNIT, load_state="unknown")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    restarts = values.get("NRestarts", "0")
    return rules.ServiceFacts(manager=manager, unit=UNIT, load_state=values.get("LoadState", "unknown"),
                           unit_file_state=values.get("UnitFileState", ""),
                           active_state=values.get("ActiveState", ""), sub_state=values.get("SubState", ""),
                           restarts=int(restarts) if restarts.isdigit() else 0)


def probe_service(_ctx: Any) -> dd.Check:
    """stoker's unit, user and system, as systemd sees it."""
    absent = systemd_absent()
    if absent:
        return rules.service_check([], absent)
    return rules.service_check([unit_facts(user=True), unit_facts(user=False)])


def probe_linger(_ctx: Any) -> dd.Check:
    """`loginctl show-user USER -p Linger`, which matters for a user unit."""
    absent = systemd_absent() or ("" if shutil.which("loginctl") else "no loginctl on this machine")
    user = getpass.getuser()
    if absent:
        return rules.linger_check(user, None, False, absent)
    try:
        done = subprocess.run(["loginctl", "show-user", user, "-p", "Linger", "--value"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        return rules.linger_check(user, None, False, f"loginctl did not answer: {exc}")
    value = done.stdout.strip()
    linger = None if done.returncode or value not in ("yes", "no") else value == "yes"
    return rules.linger_check(user, linger, unit_facts(user=True).load_state == "loaded")
