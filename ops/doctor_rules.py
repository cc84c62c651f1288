"""`stoker doctor`'s rules for the machine and the platform: the data dir, ports, clock, NATS, PostgreSQL, the
service and linger, a joined worker's control plane. Pure: facts in, a finding out (ops/doctor.py probes)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ops.doctor_domain import Check, Severity

MIN_FREE_BYTES = 100 * 1024**2  # below this JetStream cannot be trusted to take the next checkpoint
LOW_FREE_BYTES = 1024**3
CLOCK_WARN_S, CLOCK_FAIL_S = 1.0, 30.0  # leases and heartbeats are seconds long: 30 s of skew breaks them


class DataDirFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the probe saw of the data dir."""

    path: str
    exists: bool
    is_dir: bool = True
    mode: int = 0o700
    owner_uid: int | None = None
    my_uid: int | None = None  # None where the OS has no uids (Windows)
    writable: bool = True
    write_error: str = ""
    free_bytes: int | None = None


def data_dir_check(facts: DataDirFacts) -> Check:
    """Everything wrong with the data dir, the worst first; `fix` is what `--fix` may run (mkdir, chmod)."""
    path = facts.path
    if not facts.exists:
        return Check(id="data-dir", severity="warning", evidence=f"{path} does not exist yet (`stoker up` makes it)",
                     fix=f"mkdir -m 700 -p {path}")
    if not facts.is_dir:
        return Check(id="data-dir", severity="failure", evidence=f"{path} is not a directory",
                     fix=f"mv {path} {path}.old")
    failures, warnings, fixes = [], [], []
    if facts.my_uid is not None and facts.owner_uid is not None and facts.owner_uid != facts.my_uid:
        failures.append(f"owned by uid {facts.owner_uid}, not by this user (uid {facts.my_uid})")
        fixes.append(f"sudo chown -R {facts.my_uid} {path}")
    if not facts.writable:
        failures.append(f"not writable: {facts.write_error}")
        if "No space" not in facts.write_error:
            fixes.append(f"chmod u+rwx {path}")
    if facts.free_bytes is not None and facts.free_bytes < MIN_FREE_BYTES:
        failures.append(f"only {_size(facts.free_bytes)} free (JetStream needs at least {_size(MIN_FREE_BYTES)})")
        fixes.append(f"free space on the filesystem of {path}, or move it: --data-dir / STOKER_DATA_DIR")
    elif facts.free_bytes is not None and facts.free_bytes < LOW_FREE_BYTES:
        warnings.append(f"{_size(facts.free_bytes)} free: checkpoints may soon not fit")
        fixes.append(f"free space on the filesystem of {path}")
    if facts.my_uid is not None and facts.mode & 0o077:
        warnings.append(f"mode {facts.mode:04o}: others may read its credentials (should be 0700)")
        fixes.append(f"chmod 700 {path}")
    severity: Severity = "failure" if failures else "warning" if warnings else "ok"
    if severity == "ok":
        free = f", {_size(facts.free_bytes)} free" if facts.free_bytes is not None else ""
        return Check(id="data-dir", severity="ok", evidence=f"{path}: writable, yours, mode {facts.mode:04o}{free}")
    return Check(id="data-dir", severity=severity, evidence=f"{path}: " + "; ".join(failures + warnings),
                 fix=" && ".join(fixes))


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


class PortFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One port the platform uses, and who (if anyone) listens on it."""

    name: str  # "gateway", "nats", "nats-monitor"
    host: str
    port: int
    free: bool
    ours: bool = False  # held by a process of this data dir's running platform
    owner: str = ""  # the other process, as "pid 123 (python3)", when it could be named
    movable: bool = False  # `stoker up` picks another free port when this one is taken (NATS)
    setting: str = ""  # where to choose another


def ports_check(ports: Sequence[PortFacts], running: bool) -> Check:
    """Each port free, or held by this platform; a port someone else holds fails unless `stoker up` moves."""
    failures, warnings, fixes, fine = [], [], [], []
    for p in ports:
        where = f"{p.name} {p.host}:{p.port}"
        if p.free or p.ours:
            fine.append(f"{where} {'held by this platform' if p.ours else 'free'}")
            continue
        who = p.owner or "another process (not visible to this user)"
        if p.movable:
            warnings.append(f"{where} is held by {who}; `stoker up` will take another port")
        elif running:
            warnings.append(f"{where} is held by {who}, not by the running platform")
        else:
            failures.append(f"{where} is held by {who}: `stoker up` cannot start its {p.name}")
        pid = p.owner.split()[1] if p.owner.startswith("pid ") else ""
        stop = f"kill {pid}" if pid else f"stop what listens on {p.host}:{p.port}"
        if p.movable:
            fixes.append(f"none needed (to keep port {p.port}: {stop}" + (f", or choose one: {p.setting})"
                                                                          if p.setting else ")"))
        else:
            fixes.append(stop + (f" (or choose another port: {p.setting})" if p.setting else ""))
    if failures or warnings:
        return Check(id="ports", severity="failure" if failures else "warning", evidence="; ".join(failures + warnings),
                     fix="; ".join(fixes))
    return Check(id="ports", severity="ok", evidence="; ".join(fine) or "no ports to check")


def clock_check(skew_s: float | None, source: str) -> Check:
    """This machine's clock against the NATS server's (positive: we are ahead)."""
    if skew_s is None:
        return Check(id="clock", severity="skipped", evidence=source)
    evidence = f"{abs(skew_s):.3f} s {'ahead of' if skew_s > 0 else 'behind'} the NATS server ({source})"
    fix = "enable time synchronisation: timedatectl set-ntp true (or chrony / w32tm /resync)"
    if abs(skew_s) >= CLOCK_FAIL_S:
        return Check(id="clock", severity="failure", evidence=evidence, fix=fix)
    if abs(skew_s) >= CLOCK_WARN_S:
        return Check(id="clock", severity="warning", evidence=evidence, fix=fix)
    return Check(id="clock", severity="ok", evidence=evidence)


class ServiceFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the service manager says of stoker's unit (systemd today)."""

    manager: str  # "systemd --user", "systemd"
    unit: str
    load_state: str  # "loaded", "not-found"
    unit_file_state: str = ""  # "enabled", "disabled"
    active_state: str = ""  # "active", "activating", "failed", "inactive"
    sub_state: str = ""
    restarts: int = 0


RESTART_LOOP = 3  # restarts since the unit started that look like a loop rather than a crash


def service_check(facts: Sequence[ServiceFacts], absent_reason: str = "") -> Check:
    """The service installed, enabled, running, and not restarting over and over."""
    if absent_reason:
        return Check(id="service", severity="skipped", evidence=absent_reason)
    installed = [f for f in facts if f.load_state == "loaded"]
    if not installed:
        where = " and ".join(f"{f.manager}" for f in facts) or "the service manager"
        return Check(id="service", severity="skipped", evidence=f"no stoker unit installed ({where})",
                     fix="stoker service install")
    unit = installed[0]
    name = f"{unit.unit} ({unit.manager})"
    scope = "--user " if unit.manager.endswith("--user") else ""
    state = f"{unit.unit_file_state or '?'}, {unit.active_state}/{unit.sub_state}, {unit.restarts} restarts"
    if unit.active_state == "failed" or unit.restarts >= RESTART_LOOP or unit.sub_state == "auto-restart":
        return Check(id="service", severity="failure", evidence=f"{name}: {state}: it keeps failing",
                     fix=f"journalctl {scope}-u {unit.unit} -n 50 (then: systemctl {scope}restart {unit.unit})")
    if unit.active_state != "active":
        return Check(id="service", severity="warning", evidence=f"{name}: {state}: not running",
                     fix=f"systemctl {scope}start {unit.unit}")
    if unit.unit_file_state != "enabled":
        return Check(id="service", severity="warning", evidence=f"{name}: {state}: does not start at boot",
                     fix=f"systemctl {scope}enable {unit.unit}")
    return Check(id="service", severity="ok", evidence=f"{name}: {state}")


def linger_check(user: str, linger: bool | None, user_unit: bool, absent_reason: str = "") -> Check:
    """A user unit runs at boot only with linger on; without a user unit linger does not matter."""
    if absent_reason:
        return Check(id="linger", severity="skipped", evidence=absent_reason)
    if linger is None:
        return Check(id="linger", severity="skipped", evidence=f"loginctl knows nothing of user {user}")
    if linger:
        return Check(id="linger", severity="ok", evidence=f"linger is on for {user}")
    if not user_unit:
        return Check(id="linger", severity="skipped",
                     evidence=f"linger is off for {user}, which matters only for a user unit (none installed)")
    return Check(id="linger", severity="warning",
                 evidence=f"linger is off for {user}: the user unit starts only once {user} logs in",
                 fix=f"loginctl enable-linger {user}")


class NatsFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What connecting to NATS as this identity showed."""

    url: str
    identity: str  # the credential file, or "no credential"
    tls: str = ""  # the pinned CA, when TLS
    error: str = ""  # why it did not connect
    refused: bool = False  # it answered but refused the credential
    events: int | None = None  # messages in the event log (None: no log there)
    running_here: bool = False  # this data dir's platform is running


def nats_check(facts: NatsFacts, check_id: str = "nats") -> Check:
    """NATS reachable, accepting the identity, and holding the event log."""
    how = f"{facts.url} as {facts.identity}" + (f", TLS pinned to {facts.tls}" if facts.tls else ", no TLS")
    if facts.refused:
        return Check(id=check_id, severity="failure", evidence=f"{how}: refused: {facts.error}",
                     fix="pass the platform's credential with --credentials (a worker: `stoker worker --join` again)")
    if facts.error:
        fix = "stoker up" if not facts.running_here else "stoker status (then see <data dir>/logs/nats.log)"
        return Check(id=check_id, severity="failure", evidence=f"{how}: {facts.error}", fix=fix)
    if facts.events is None:
        return Check(id=check_id, severity="failure", evidence=f"{how}: connected, but it holds no stoker event log",
                     fix="stoker events init" if facts.running_here else "stoker up (or point --nats at the platform)")
    return Check(id=check_id, severity="ok", evidence=f"{how}: connected; the event log holds {facts.events} events")


def postgres_check(configured: bool, target: str, error: str = "", server: str = "") -> Check:
    """PostgreSQL answering, when the read models live there."""
    if not configured:
        return Check(id="postgres", severity="skipped", evidence="not configured (read models in SQLite)")
    if error:
        return Check(id="postgres", severity="failure", evidence=f"{target}: {error}",
                     fix="check database_url / STOKER_DATABASE_URL, and that PostgreSQL runs (pg_isready)")
    return Check(id="postgres", severity="ok", evidence=f"{target}: answers ({server})")


def registration_check(worker_id: str, facts: NatsFacts) -> Check:
    """A joined worker: the control plane answers over TLS and accepts the worker's own credential (admitted)."""
    if facts.refused:
        return Check(id="control-plane", severity="failure", evidence=f"{facts.url}: refused worker {worker_id}'s "
                     f"credential (revoked?): {facts.error}", fix="stoker worker --join TOKEN (a new join token from "
                     "the control plane: stoker join-token create)")
    if facts.error:
        return Check(id="control-plane", severity="failure", evidence=f"{facts.url}: {facts.error}",
                     fix=f"check that the platform runs and that this machine reaches {facts.url} "
                         "(then: stoker doctor control-plane)")
    return Check(id="control-plane", severity="ok",
                 evidence=f"{facts.url} as {facts.identity}, TLS pinned to {facts.tls}: connected, credential admitted")
