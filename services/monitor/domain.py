"""The monitor's alert decider: samples, silence and progress in, alert events out. Pure.

The state (`AlertBoard`) is the fold of the alert events: which alerts are open, for which rule and
target. What is not in the log (when a breach began, when a host was last heard, when an open alert
was last announced) is the `Watch` beside it, as discovery keeps heartbeat times beside its registry.
Each rule fires above `fire` (or below, for `direction = "below"`) once the breach has lasted
`pending_s`, and clears only past `clear` (hysteresis: a value wobbling around `fire` raises one
alert). A host that stops sending samples gets its own alert (`host_silent`); its other alerts stay
as they were: silence is never a recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from contracts import events as ev
from contracts.base import Event
from contracts.telemetry import HostSample

SILENT_RULE = "host_silent"
STALL_RULE = "job_stalled"
Direction = Literal["above", "below"]
IdFactory = Callable[[], str]
HOST_METRICS = ("cpu_percent", "memory_percent", "swap_percent", "disk_percent", "disk_full_in_h",
                "gpu_temperature_c", "gpu_memory_percent", "gpu_xid_errors", "gpu_ecc_errors", "gpus_missing")
# Figures of one job on its host (a rule on one of these targets each running job that asked for GPUs): the
# utilisation of its GPUs, and 1 when its process is on none of the host's GPUs (0 when it is on one).
JOB_METRICS = ("job_gpu_utilization_percent", "job_on_cpu")
METRICS = HOST_METRICS + JOB_METRICS


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One alert rule on a host metric: fire past `fire` for `pending_s`, clear past `clear`."""

    name: ev.RuleName
    metric: str
    fire: float
    clear: float
    direction: Direction = "above"
    pending_s: float = 0.0
    repeat_s: float = 3600.0  # an open alert is announced again this often (a reminder, not an event)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"rule {self.name}: unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if (self.direction == "above" and self.clear > self.fire) or (
                self.direction == "below" and self.clear < self.fire):
            side = "at or below" if self.direction == "above" else "at or above"
            raise ValueError(f"rule {self.name}: clear ({self.clear}) must be {side} fire ({self.fire})")
        if self.pending_s < 0 or self.repeat_s <= 0:
            raise ValueError(f"rule {self.name}: pending_s must be >= 0 and repeat_s > 0")

    def breached(self, value: float) -> bool:
        """Whether `value` is past the fire threshold."""
        return value > self.fire if self.direction == "above" else value < self.fire

    def cleared(self, value: float) -> bool:
        """Whether `value` is back past the clear threshold."""
        return value <= self.clear if self.direction == "above" else value >= self.clear


DEFAULT_RULES = (
    Rule(name="cpu_high", metric="cpu_percent", fire=80.0, clear=70.0, pending_s=300.0),
    Rule(name="memory_high", metric="memory_percent", fire=85.0, clear=80.0, pending_s=60.0),
    Rule(name="disk_full", metric="disk_percent", fire=90.0, clear=88.0),
    Rule(name="disk_filling", metric="disk_full_in_h", fire=8.0, clear=12.0, direction="below", pending_s=600.0),
    Rule(name="gpu_hot", metric="gpu_temperature_c", fire=85.0, clear=80.0, pending_s=60.0),
    Rule(name="gpu_xid", metric="gpu_xid_errors", fire=0.0, clear=0.0),
    # Fewer GPUs than at service install (a driver that did not load at boot): the worker waits, this says so.
    Rule(name="gpu_missing", metric="gpus_missing", fire=0.0, clear=0.0, pending_s=60.0),
    Rule(name="gpu_idle", metric="job_gpu_utilization_percent", fire=5.0, clear=20.0, direction="below",
         pending_s=600.0),
    Rule(name="job_on_cpu", metric="job_on_cpu", fire=0.5, clear=0.5, pending_s=120.0),
)


class OpenAlert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert raised and not yet resolved."""

    alert_id: str
    rule: str
    target: str
    raised_at: datetime
    target_kind: str = "host"


class AlertBoard(msgspec.Struct, frozen=True, kw_only=True):
    """The fold of the alert events: open alerts by key (`rule:target`)."""

    open: dict[str, OpenAlert] = {}


class Watch(msgspec.Struct, frozen=True, kw_only=True):
    """What the decisions need that is not in the log: breaches pending, hosts last heard, last reminders."""

    pending: dict[str, datetime] = {}  # key -> when its breach began
    seen: dict[str, datetime] = {}  # host id -> its last sample's arrival
    reminded: dict[str, datetime] = {}  # key -> when the open alert was last announced


class Reminder(msgspec.Struct, frozen=True, kw_only=True):
    """An open alert is still open after its rule's `repeat_s`: announce it again (not an event)."""

    alert_id: str
    rule: str
    target: str
    value: float | None


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """What one observation decided: the events to append, the watch after it, and reminders to send."""

    events: list[Event] = []
    watch: Watch = Watch()
    reminders: list[Reminder] = []


class JobOnHost(msgspec.Struct, frozen=True, kw_only=True):
    """A job running on the sampled host, as far as the GPU rules need it."""

    job_id: str
    gpus: int = 0  # GPUs it asked for
    gpu_indices: tuple[int, ...] = ()  # the ones the scheduler gave it
    pid: int | None = None  # its process, as its worker's heartbeat says


class RunningJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job some worker reports running, since when the monitor has seen it so."""

    worker_id: str
    since: datetime


def key(rule: str, target: str) -> str:
    """The board key of a rule on a target."""
    return f"{rule}:{target}"


def initial_state() -> AlertBoard:
    """No open alerts."""
    return AlertBoard()


def readings(metric: str, sample: HostSample) -> float | None:
    """A host metric's value in one sample (the worst disk or GPU); None when the sample has none."""
    if metric in ("cpu_percent", "memory_percent", "swap_percent"):
        return float(getattr(sample, metric))
    if metric == "disk_percent":
        return max((d.percent for d in sample.disks), default=None)
    if metric == "disk_full_in_h":
        return min((d.full_in_h for d in sample.disks if d.full_in_h is not None), default=None)
    if metric == "gpus_missing":
        return None if sample.gpus_expected is None else float(max(0, sample.gpus_expected - len(sample.gpus)))
    gpu_values = {
        "gpu_temperature_c": [g.temperature_c for g in sample.gpus],
        "gpu_memory_percent": [100.0 * g.memory_used_bytes / g.memory_total_bytes for g in sample.gpus
                               if g.memory_used_bytes is not None and g.memory_total_bytes],
        "gpu_xid_errors": [float(g.xid_errors) for g in sample.gpus],
        "gpu_ecc_errors": [float(g.ecc_errors) for g in sample.gpus],
    }.get(metric, [])
    return max((v for v in gpu_values if v is not None), default=None)


def job_reading(metric: str, sample: HostSample, job: JobOnHost) -> float | None:
    """A job's figure on its host's sample; None when it asked for no GPU or the host cannot tell."""
    if job.gpus == 0 or not sample.gpus:
        return None  # no GPU asked for, or no GPU figures here (no NVML): nothing to say
    mine = [g for g in sample.gpus if g.index in job.gpu_indices] or list(sample.gpus)
    if metric == "job_gpu_utilization_percent":
        return max((g.utilization_percent for g in mine if g.utilization_percent is not None), default=None)
    if not job.gpu_indices:
        return 1.0  # it asked for GPUs and was given none
    if job.pid is None or any(g.processes is None for g in mine):
        return None  # which process runs where is unknown
    return 0.0 if any(job.pid in (g.processes or ()) for g in mine) else 1.0


class _Judging(msgspec.Struct, kw_only=True):
    """What `decide_sample` builds up while it judges each rule on each target."""

    board: AlertBoard
    now: datetime
    new_id: IdFactory
    pending: dict[str, datetime]
    reminded: dict[str, datetime]
    events: list[Event] = []
    reminders: list[Reminder] = []

    def judge(self, rule: Rule, value: float | None, target: str, kind: ev.TargetKind, where: str) -> None:
        if value is None:
            return  # no such figure on this host (no GPU, no disk estimate yet): nothing to decide
        k, now = key(rule.name, target), self.now
        opened = self.board.open.get(k)
        if opened is not None:
            if rule.cleared(value):
                self.events.append(ev.AlertResolved(alert_id=opened.alert_id, value=value, resolved_at=now))
                self.reminded.pop(k, None)
            elif now - self.reminded.get(k, opened.raised_at) >= timedelta(seconds=rule.repeat_s):
                self.reminders.append(Reminder(alert_id=opened.alert_id, rule=rule.name, target=target, value=value))
                self.reminded[k] = now
            return
        if not rule.breached(value):
            self.pending.pop(k, None)
            return
        began = self.pending.setdefault(k, now)
        if now - began >= timedelta(seconds=rule.pending_s):
            self.pending.pop(k)
            self.reminded[k] = now
            sign = ">" if rule.direction == "above" else "<"
            self.events.append(ev.AlertRaised(
                alert_id=self.new_id(), rule=rule.name, target_kind=kind, target=target, value=value,
                threshold=rule.fire, raised_at=now,
                message=f"{where}{rule.metric} {value:.1f} {sign} {rule.fire:g} for {rule.pending_s:g}s"))


def decide_sample(board: AlertBoard, watch: Watch, sample: HostSample, rules: Iterable[Rule],
                  now: datetime, new_id: IdFactory, jobs: Iterable[JobOnHost] = ()) -> Step:
    """One host sample: raise what has breached long enough, resolve what has cleared, end a silence.

    `jobs` are the jobs running on the host: rules on a job metric judge each of them.
    """
    host, jobs = sample.host_id, list(jobs)
    j = _Judging(board=board, now=now, new_id=new_id, pending=dict(watch.pending), reminded=dict(watch.reminded))
    silent = board.open.get(key(SILENT_RULE, host))
    if silent is not None:
        j.events.append(ev.AlertResolved(alert_id=silent.alert_id, reason="data_back", resolved_at=now))
        j.reminded.pop(key(SILENT_RULE, host), None)
    for rule in rules:
        if rule.metric in JOB_METRICS:
            for job in jobs:
                j.judge(rule, job_reading(rule.metric, sample, job), job.job_id, "job",
                        f"job {job.job_id} on {host}: ")
        else:
            j.judge(rule, readings(rule.metric, sample), host, "host", "")
    seen = {**watch.seen, host: now}
    return Step(events=j.events, watch=Watch(pending=j.pending, seen=seen, reminded=j.reminded),
                reminders=j.reminders)


def decide_silence(board: AlertBoard, watch: Watch, now: datetime, missing_after_s: float,
                   new_id: IdFactory) -> list[Event]:
    """Hosts unheard for `missing_after_s` get a `host_silent` alert (their other alerts stay as they are)."""
    out: list[Event] = []
    for host, last in sorted(watch.seen.items()):
        if now - last >= timedelta(seconds=missing_after_s) and key(SILENT_RULE, host) not in board.open:
            out.append(ev.AlertRaised(
                alert_id=new_id(), rule=SILENT_RULE, target_kind="host", target=host, value=None,
                threshold=missing_after_s, raised_at=now,
                message=f"no samples from host {host} for {missing_after_s:g}s"))
    return out


def decide_stalls(board: AlertBoard, running: Mapping[str, RunningJob], progress: Mapping[str, datetime],
                  now: datetime, stall_after_s: float, new_id: IdFactory,
                  per_job: Mapping[str, float] | None = None) -> list[Event]:
    """Running jobs without progress for their stall period (`per_job`, else `stall_after_s`) stall; a stall ends
    when progress resumes; every alert on a job ends with the job."""
    out: list[Event] = []
    per_job = per_job or {}
    for job_id, job in sorted(running.items()):
        last = progress.get(job_id)
        quiet_since = max(last, job.since) if last is not None else job.since
        after = per_job.get(job_id, stall_after_s)
        if key(STALL_RULE, job_id) not in board.open and now - quiet_since >= timedelta(seconds=after):
            out.append(ev.JobStalled(alert_id=new_id(), job_id=job_id, worker_id=job.worker_id,
                                     last_progress_at=last, stall_after_s=after, raised_at=now))
    for _key, opened in sorted(board.open.items()):
        if opened.target_kind != "job":
            continue
        if opened.target not in running:
            out.append(ev.AlertResolved(alert_id=opened.alert_id, reason="job_ended", resolved_at=now))
        elif opened.rule == STALL_RULE and (last := progress.get(opened.target)) is not None \
                and last > opened.raised_at:
            out.append(ev.AlertResolved(alert_id=opened.alert_id, reason="progress", resolved_at=now))
    return out


def full_in_hours(points: list[tuple[float, int]], free_bytes: int) -> float | None:
    """When a disk fills at the rate of a least-squares line through (seconds, used bytes); None: not filling."""
    if len(points) < 3 or points[-1][0] - points[0][0] <= 0:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_u = sum(u for _, u in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    rate = sum((t - mean_t) * (u - mean_u) for t, u in points) / spread  # bytes per second
    if rate <= 0:
        return None
    return round(free_bytes / rate / 3600.0, 3)


def evolve(board: AlertBoard, event: Event) -> AlertBoard:
    """The board after one alert event (a new value; the old one is untouched)."""
    if isinstance(event, ev.AlertRaised):
        opened = OpenAlert(alert_id=event.alert_id, rule=event.rule, target=event.target, raised_at=event.raised_at,
                           target_kind=event.target_kind)
        return AlertBoard(open={**board.open, key(event.rule, event.target): opened})
    if isinstance(event, ev.JobStalled):
        opened = OpenAlert(alert_id=event.alert_id, rule=STALL_RULE, target=event.job_id, raised_at=event.raised_at,
                           target_kind="job")
        return AlertBoard(open={**board.open, key(STALL_RULE, event.job_id): opened})
    if isinstance(event, ev.AlertResolved):
        return AlertBoard(open={k: a for k, a in board.open.items() if a.alert_id != event.alert_id})
    return board
