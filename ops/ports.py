"""Port conflicts of `stoker up`, asking the system: who holds a port (psutil), and what was chosen before.

The choices are kept in `<data>/ports.json` (`{"gateway": {"wanted": 8000, "port": 13456, "holder": …}}`), so a
moved listener keeps its new port across restarts while the configured one stays taken.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import psutil

from eventstore.server import free_port, port_is_free
from ops.portchoice import PortChoice, choose_port

PORTS_FILE = "ports.json"


def port_holder(port: int) -> str | None:
    """The program listening on `port` (`nginx (pid 812)`), or None when the system does not say (another
    user's process without root, or nothing listens and the port is only in TIME_WAIT)."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            with contextlib.suppress(psutil.Error):
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
            return f"pid {conn.pid}"
    return None


def remembered(data_dir: Path) -> dict[str, dict]:
    """The choices kept in the data dir (empty when there are none or the file is unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        value = json.loads((Path(data_dir) / PORTS_FILE).read_text())
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if isinstance(v, dict)}
    return {}


def choose(data_dir: Path, name: str, wanted: int, host: str) -> PortChoice:
    """The port listener `name` binds on `host`: the configured one, the one chosen before, or a free one."""
    before = remembered(data_dir).get(name, {})
    kept = before.get("port") if before.get("wanted") == wanted and isinstance(before.get("port"), int) else None
    bind = host or "0.0.0.0"
    return choose_port(name, wanted, lambda p: port_is_free(p, bind), kept, lambda: free_port(bind), port_holder)


def record(data_dir: Path, choices: list[PortChoice]) -> None:
    """Keep the choices of moved listeners (and forget those back on their configured port)."""
    kept = remembered(data_dir)
    for choice in choices:
        if choice.moved:
            kept[choice.name] = {"wanted": choice.wanted, "port": choice.port, "holder": choice.holder,
                                 "at": time.time()}
        elif choice.name in kept and kept[choice.name].get("wanted") == choice.wanted:
            del kept[choice.name]
    path = Path(data_dir) / PORTS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(kept, indent=1))
    tmp.replace(path)
