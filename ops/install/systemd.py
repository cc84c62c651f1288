"""A systemd unit for stoker, and the plan that installs it (a user unit by default, `--system` a system one). Pure.

A user unit lives in `~/.config/systemd/user`, is wanted by `default.target` (user managers never reach
`multi-user.target`) and starts at boot without a login once linger is on. A system unit runs as the
dedicated `stoker` account in the GPU groups. Either is `Type=notify`: stoker says READY=1 when it is up
and pings the watchdog (eventstore.sdnotify). `KillMode=mixed`: SIGTERM reaches `stoker up` alone, which
stops its processes in order (workers checkpoint first, NATS last); what is left after the timeout is killed.
"""

from __future__ import annotations

import posixpath

from ops.install.plan import (
    GPU_GROUPS,
    SERVICE_USER,
    Command,
    Host,
    Plan,
    PlannedFile,
    Request,
    ServiceSpec,
    gpu_record,
    service_spec,
)

RESTART_SEC = 5
WATCHDOG_SEC = 60  # stoker pings every 30 s from its event loop
START_LIMIT_INTERVAL_SEC, START_LIMIT_BURST = 600, 10  # a crash loop faster than this gives up
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._:=,+@-")


def quote(word: str, command: bool = True) -> str:
    """One word of ExecStart= (`command`) or Environment=: quoted when needed, `%` escaped (a specifier) and, in
    a command, `$` (a variable; Environment= expands none)."""
    escaped = word.replace("%", "%%").replace("$", "$$") if command else word.replace("%", "%%")
    if word and set(word) <= _SAFE:
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def unit(spec: ServiceSpec) -> str:
    """The unit file's text."""
    after = ["network-online.target"]
    notes = []
    if spec.gpu_host and spec.system:
        after.append("nvidia-persistenced.service")
    elif spec.gpu_host:
        notes.append("# A user manager cannot order itself after system units (nvidia-persistenced.service): the\n"
                     "# worker waits for the GPUs recorded at install instead (services.trainer.gpucheck).")
    lines = ["# Written by `stoker service install`; `stoker service uninstall` removes it.", *notes,
             "[Unit]", f"Description={spec.description}",
             f"After={' '.join(after)}", f"Wants={' '.join(after)}",
             f"StartLimitIntervalSec={START_LIMIT_INTERVAL_SEC}", f"StartLimitBurst={START_LIMIT_BURST}", "",
             "[Service]", "Type=notify", "NotifyAccess=main",
             "ExecStart=" + " ".join(quote(a) for a in spec.argv),
             f"WorkingDirectory={spec.data_dir.replace('%', '%%')}"]  # a path, not a command line: never quoted
    lines += [f"Environment={quote(f'{k}={v}', command=False)}" for k, v in sorted(spec.env.items())]
    if spec.system:
        lines += [f"User={spec.user}", f"Group={spec.user}"]
        if spec.groups:
            lines.append(f"SupplementaryGroups={' '.join(spec.groups)}")
        lines.append("NoNewPrivileges=yes")
    lines += ["Restart=always", f"RestartSec={RESTART_SEC}",
              f"TimeoutStartSec={spec.start_timeout_s if spec.start_timeout_s is not None else 'infinity'}",
              f"TimeoutStopSec={spec.stop_timeout_s}", "KillMode=mixed", f"WatchdogSec={WATCHDOG_SEC}",
              "StandardOutput=journal", "StandardError=journal", f"SyslogIdentifier={spec.name}", "",
              "[Install]", f"WantedBy={'multi-user.target' if spec.system else 'default.target'}", ""]
    return "\n".join(lines)


def unit_dir(host: Host, system: bool) -> str:
    """Where the unit goes: /etc/systemd/system, or the user's systemd/user config dir."""
    if system:
        return "/etc/systemd/system"
    return posixpath.join(host.config_home or posixpath.join(host.home, ".config"), "systemd", "user")


def spec_for(request: Request, host: Host) -> ServiceSpec:
    """The service spec of this request on a Linux host."""
    what = ("control plane (NATS, services, gateway, local worker)" if request.role == "control-plane"
            else "worker")
    return service_spec(
        request, host, "linux", what=what, log_dir=posixpath.join(request.data_dir, "logs"), system=request.system,
        user=SERVICE_USER if request.system else host.user,
        groups=tuple(g for g in GPU_GROUPS if g in host.groups) if request.system else (),
        gpu_host=bool(host.gpus) or host.gpu_driver,
        start_timeout_s=120 if request.role == "control-plane" else None)


def plan(request: Request, host: Host) -> Plan:
    """Write the unit and the GPU record; reload, enable and start; linger (user) or the account (system)."""
    spec = spec_for(request, host)
    unit_name = f"{spec.name}.service"
    ctl = ("systemctl",) if request.system else ("systemctl", "--user")
    unit_file = PlannedFile(path=posixpath.join(unit_dir(host, request.system), unit_name), mode=0o644,
                            content=unit(spec))
    commands, purge, notes = [], [], []
    if request.system:
        commands += _account(request, host, spec)
        if not host.service_user_exists:
            purge.append(Command(argv=("userdel", SERVICE_USER), why="remove the account the install made"))
    elif not host.lingering:
        commands.append(Command(argv=("loginctl", "enable-linger", host.user),
                                why="start the user's services at boot, without a login", must=False))
    else:
        notes.append(f"linger is on for {host.user} already: the service starts at boot")
    commands += [Command(argv=(*ctl, "daemon-reload"), why="read the new unit"),
                 Command(argv=(*ctl, "enable", "--now", unit_name), why="start it now and at every boot")]
    undo_after = [Command(argv=(*ctl, "daemon-reload"), why="forget the unit", must=False)]
    if not request.system and not host.lingering:
        undo_after.append(Command(argv=("loginctl", "disable-linger", host.user),
                                  why="linger was off before the install", must=False))
    return Plan(target="linux", name=unit_name, role=request.role, system=request.system,
                data_dir=request.data_dir, argv=spec.argv, files=(unit_file, gpu_record(request, host)),
                commands=tuple(commands),
                undo_before=(Command(argv=(*ctl, "disable", "--now", unit_name), why="stop it and keep it stopped",
                                     must=False),),
                undo_after=tuple(undo_after), purge=tuple(purge), notes=tuple(notes),
                controls=controls(request.system, unit_name))


def controls(system: bool, unit_name: str) -> dict[str, tuple[tuple[str, ...], ...]]:
    """systemctl for start, stop, restart and status; the journal for logs."""
    ctl = ("systemctl",) if system else ("systemctl", "--user")
    journal = ("journalctl",) if system else ("journalctl", "--user")
    out = {action: ((*ctl, action, unit_name),) for action in ("start", "stop", "restart")}
    return out | {"status": ((*ctl, "status", "--no-pager", unit_name),),
                  "logs": ((*journal, "-u", unit_name, "-n", "200", "--no-pager"),),
                  "follow": ((*journal, "-u", unit_name, "-n", "50", "-f"),)}


def _account(request: Request, host: Host, spec: ServiceSpec) -> list[Command]:
    """The dedicated account, in the GPU groups, owning the data dir."""
    out = []
    if not host.service_user_exists:
        groups = ("--groups", ",".join(spec.groups)) if spec.groups else ()
        out.append(Command(argv=("useradd", "--system", "--user-group", "--home-dir", request.data_dir,
                                 "--shell", "/usr/sbin/nologin", *groups, SERVICE_USER),
                           why="a dedicated account for the service"))
    elif spec.groups:
        out.append(Command(argv=("usermod", "--append", "--groups", ",".join(spec.groups), SERVICE_USER),
                           why="GPU devices belong to these groups"))
    out += [Command(argv=("install", "-d", "-m", "0700", "-o", SERVICE_USER, "-g", SERVICE_USER, request.data_dir),
                    why="the data dir, the account's own"),
            Command(argv=("chown", "-R", f"{SERVICE_USER}:{SERVICE_USER}", request.data_dir),
                    why="what is already in it (a joined worker's keys) belongs to the account")]
    return out
