"""Telemetry: high-rate, disposable samples in the STOKER_TELEMETRY stream."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from contracts.base import Id, Message, NonNegative, SmallNonNegative


class JobProgress(Message, kw_only=True):
    """A progress sample of one job attempt."""

    job_id: Id
    attempt: SmallNonNegative
    worker_id: Id
    iteration: NonNegative
    total: NonNegative | None = None  # max_iterations, or episodes for an evaluation
    loss: float | None = None
    metrics: dict[str, float] = {}
    at: datetime


class EpisodeReport(Message, kw_only=True):
    """One finished evaluation episode, with its figures and move-by-move log."""

    job_id: Id
    attempt: SmallNonNegative
    episode: NonNegative
    score: float
    figures: dict[str, float] = {}
    log: list[dict[str, Any]] = []
    at: datetime


class WorkerHeartbeat(Message, kw_only=True):
    """A worker is alive: what it runs, how many slots are free, and how loaded its host is."""

    worker_id: Id
    running: tuple[str, ...] = ()
    pids: dict[str, NonNegative] = {}  # job id -> its process (the monitor tells a job on a GPU from one on the CPU)
    free_slots: SmallNonNegative = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    at: datetime


Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100_000.0)]  # a process may use several cores: > 100
Name = Annotated[str, msgspec.Meta(max_length=255)]


class DiskFigures(Message, kw_only=True):
    """One disk that holds the data dir or a job's work dir."""

    path: Annotated[str, msgspec.Meta(max_length=4096)]
    percent: Percent
    free_bytes: NonNegative
    total_bytes: NonNegative
    full_in_h: float | None = None  # linear estimate from the recent samples; None: not filling up


class NetFigures(Message, kw_only=True):
    """Bytes through one network interface since boot."""

    interface: Name
    sent_bytes: NonNegative
    recv_bytes: NonNegative


class ProcessFigures(Message, kw_only=True):
    """One stoker process or job child."""

    pid: NonNegative
    name: Name
    cpu_percent: Percent
    rss_bytes: NonNegative
    threads: NonNegative
    open_files: NonNegative


class GpuFigures(Message, kw_only=True):
    """One GPU through NVML; figures NVML does not give on this GPU are None."""

    index: SmallNonNegative
    name: Name = ""
    utilization_percent: Percent | None = None
    memory_used_bytes: NonNegative | None = None
    memory_total_bytes: NonNegative | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    sm_clock_mhz: NonNegative | None = None
    memory_clock_mhz: NonNegative | None = None
    power_limit_w: float | None = None
    throttle_reasons: NonNegative = 0  # NVML's clocks-throttle-reasons bit mask
    ecc_errors: NonNegative = 0  # uncorrected, volatile
    xid_errors: NonNegative = 0  # XID events seen since the monitor started
    ecc_corrected: NonNegative = 0  # corrected, volatile
    processes: tuple[NonNegative, ...] | None = None  # pids of its compute processes; None: NVML cannot say


class HostSample(Message, kw_only=True):
    """One machine's health at one moment, published by its monitor on `stoker.telemetry.host.<host_id>`."""

    host_id: Id
    hostname: Name = ""
    cpu_percent: Percent
    per_cpu: tuple[Percent, ...] = ()
    load: tuple[float, ...] = ()  # 1, 5 and 15 minute load averages
    memory_percent: Percent
    memory_available_bytes: NonNegative = 0
    swap_percent: Percent = 0.0
    swap_used_bytes: NonNegative = 0
    disks: tuple[DiskFigures, ...] = ()
    network: tuple[NetFigures, ...] = ()
    processes: tuple[ProcessFigures, ...] = ()
    gpus: tuple[GpuFigures, ...] = ()
    gpu_note: Annotated[str, msgspec.Meta(max_length=500)] = ""  # why there are no GPU figures, if there are none
    at: datetime
    # issue 13: how many GPUs `stoker service install` saw here; None: no record, or NVML cannot count them
    # (not installed). The monitor's `gpu_missing` rule fires when `gpus` holds fewer.
    gpus_expected: SmallNonNegative | None = None
