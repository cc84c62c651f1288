"""A launchd LaunchAgent for stoker, and the plan that installs it. Pure.

The agent runs as the user from login on (`RunAtLoad`), is started again whenever it exits (`KeepAlive`),
and writes its output to files in the data dir's logs. It is loaded with `launchctl bootstrap gui/<uid>`
and removed with `launchctl bootout` (the old `load`/`unload` are deprecated).
"""

from __future__ import annotations

import plistlib

from ops.install.plan import (
    Command,
    Host,
    Plan,
    PlannedFile,
    Request,
    ServiceSpec,
    gpu_record,
    service_spec,
)

THROTTLE_S = 5  # launchd waits at least this long between two starts


def log_paths(spec: ServiceSpec) -> tuple[str, str]:
    """The agent's stdout and stderr files."""
    return f"{spec.log_dir}/service.out.log", f"{spec.log_dir}/service.err.log"


def plist(spec: ServiceSpec) -> str:
    """The LaunchAgent's property list (XML)."""
    out, err = log_paths(spec)
    document = {
        "Label": spec.name,
        "ProgramArguments": list(spec.argv),
        "EnvironmentVariables": dict(sorted(spec.env.items())),
        "WorkingDirectory": spec.data_dir,
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": THROTTLE_S,
        "ExitTimeOut": spec.stop_timeout_s,  # SIGTERM, then this long before SIGKILL: jobs checkpoint first
        "StandardOutPath": out,
        "StandardErrorPath": err,
    }
    return plistlib.dumps(document, sort_keys=False).decode()


def domain(host: Host) -> str:
    """The user's GUI domain, where LaunchAgents run."""
    return f"gui/{host.uid}"


def plan(request: Request, host: Host) -> Plan:
    """Write the plist and the GPU record; bootstrap it into the user's domain."""
    spec = service_spec(request, host, "macos", log_dir=f"{request.data_dir}/logs", system=False)
    name = spec.name
    path = f"{host.home}/Library/LaunchAgents/{name}.plist"
    return Plan(target="macos", name=name, role=request.role, system=False, data_dir=request.data_dir,
                argv=spec.argv,
                files=(PlannedFile(path=path, mode=0o644, content=plist(spec)), gpu_record(request, host)),
                commands=(Command(argv=("launchctl", "bootstrap", domain(host), path),
                                  why="load it: it starts now and at every login"),),
                undo_before=(Command(argv=("launchctl", "bootout", f"{domain(host)}/{name}"),
                                     why="stop it and unload it", must=False),),
                notes=(f"logs: {' and '.join(log_paths(spec))}",), log_files=log_paths(spec),
                controls={"start": (("launchctl", "bootstrap", domain(host), path),),
                          "stop": (("launchctl", "bootout", f"{domain(host)}/{name}"),),
                          "restart": (("launchctl", "kickstart", "-k", f"{domain(host)}/{name}"),),
                          "status": (("launchctl", "print", f"{domain(host)}/{name}"),)})
