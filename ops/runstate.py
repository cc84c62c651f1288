"""What a running `stoker up` says about itself: its state file, the gateway's health, and `stoker status`'s report."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.output import table

STATE_FILE = "supervisor.json"
HEALTH_PATH = "/api/v1/health"


def state_path(data_dir: Path) -> Path:
    """Where the supervisor keeps its state."""
    return Path(data_dir) / STATE_FILE


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file in one step (a reader never sees half of it)."""
    path = state_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The last state the supervisor wrote, if any."""
    with contextlib.suppress(OSError, ValueError):
        value = json.loads(state_path(data_dir).read_text())
        if isinstance(value, dict):
            return value
    return None


def gateway_health(base_url: str, timeout: float = 3.0) -> tuple[int | None, dict[str, Any] | None, str]:
    """GET the health endpoint: (HTTP status or None when nothing answers, the body, what went wrong)."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + HEALTH_PATH, timeout=timeout) as response:
            return response.status, _json(response.read()), ""
    except urllib.error.HTTPError as exc:  # 503: it answers, and says what is down
        return exc.code, _json(exc.read()), f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return None, None, str(getattr(exc, "reason", exc))


def _json(data: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        value = json.loads(data)
        if isinstance(value, dict):
            return value
    return None


def health_summary(body: dict[str, Any] | None) -> str:
    """A health report in a few words: what is not fine."""
    if not body:
        return "no answer"
    problems = []
    if not body.get("nats", {}).get("connected", True):
        problems.append("NATS not connected")
    problems += [f"stream {s.get('name')} not ok" for s in body.get("streams", []) if not s.get("ok", True)]
    problems += [f"{s.get('name')} not answering" for s in body.get("services", [])
                 if s.get("required") and not s.get("up")]
    if not body.get("store", {}).get("ok", True):
        problems.append("read-model store not ok")
    status = body.get("state", "?")
    return status if not problems else f"{status}: {', '.join(problems)}"


# `stoker status`: the report, from the lock file, the state file and what is alive now.

EXIT_UP = 0
EXIT_NOT_HEALTHY = 1  # running, but starting, stopping, or the gateway's health is not ok
EXIT_NOT_RUNNING = 3  # as `systemctl status` and LSB init scripts say it


def summarize(data_dir: Path, holder: dict[str, Any] | None, state: dict[str, Any] | None,
              alive: Callable[[Any], bool], health: Callable[[str], tuple[int | None, dict | None, str]]
              ) -> dict[str, Any]:
    """The report, from what the lock file and the state file say and what is alive now."""
    report: dict[str, Any] = {"data_dir": str(data_dir), "running": holder is not None}
    if holder is None:
        return report | {"state": "not running"}
    state = state or {}
    pid = holder.get("pid")
    supervisor_alive = alive(pid)
    processes = []
    for process in state.get("processes", []) if state.get("pid") == pid else []:
        running = process.get("pid") is not None and alive(process.get("pid"))
        processes.append({**process, "alive": running})
    phase = state.get("state") or holder.get("state") or "unknown"
    if not supervisor_alive:
        phase = "supervisor gone"
    report |= {"state": phase, "pid": pid, "supervisor_alive": supervisor_alive,
               "nats": holder.get("nats") or state.get("nats"), "processes": processes}
    url = holder.get("gateway") or state.get("gateway")
    if url:
        code, body, why = health(url)
        report["gateway"] = {"url": url, "http_status": code, "health": (body or {}).get("state"),
                             "summary": health_summary(body) if code is not None else f"not answering: {why}"}
    return report


def exit_code(report: dict[str, Any]) -> int:
    """0: up and healthy; 1: running but not (yet, or any more) healthy; 3: nothing runs here."""
    if not report["running"]:
        return EXIT_NOT_RUNNING
    gateway = report.get("gateway")
    healthy = gateway is None or gateway.get("http_status") == 200
    return EXIT_UP if report["state"] == "up" and healthy else EXIT_NOT_HEALTHY


def render(report: dict[str, Any]) -> str:
    """The report for a person."""
    if not report["running"]:
        return f"nothing is running from {report['data_dir']}"
    if report["state"] == "supervisor gone":
        head = f"stoker's supervisor (pid {report['pid']}) is gone; the processes it started are finishing"
    else:
        head = f"stoker is {report['state']} here (pid {report['pid']})"
    lines = [head, f"  data:     {report['data_dir']}", f"  NATS:     {report.get('nats') or '?'}"]
    gateway = report.get("gateway")
    if gateway:
        lines.append(f"  gateway:  {gateway['url']}  health: {gateway['summary']}"
                     + (f" (HTTP {gateway['http_status']})" if gateway["http_status"] else ""))
    rows = [(p["name"], p.get("pid") or "-", p.get("state") if p["alive"] or p.get("state") != "running"
             else "gone", p.get("restarts", 0), p.get("last_exit") or "") for p in report.get("processes", [])]
    if rows:
        lines.append(table(rows, ["process", "pid", "state", "restarts", "last exit"]))
    return "\n".join(lines)
