"""Samplers: what this machine looks like now, as a `HostSample`. The real one reads psutil and NVML.

A sampler is anything with `sample(now) -> HostSample` (`Sampler`); the monitor gets one injected, so
tests give it chosen values. NVML comes from `nvidia-ml-py` (module `pynvml`), imported only when present.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec
import psutil

from contracts.base import is_valid_id
from contracts.telemetry import DiskFigures, GpuFigures, HostSample, NetFigures, ProcessFigures
from services.monitor.domain import full_in_hours

MAX_PROCESSES = 64
MAX_INTERFACES = 32
DISK_HISTORY = 60  # samples kept per disk for the "full in N hours" estimate


class Sampler(Protocol):
    """Something that can say how this machine is doing right now."""

    def sample(self, now: datetime) -> HostSample:
        """One sample."""
        ...

    def close(self) -> None:
        """Release what it holds (NVML)."""
        ...


def local_host_id(data_dir: Path) -> str:
    """The local worker's id (kept in the data dir), else `<hostname>-<8 hex of the data dir>` as it derives it."""
    with contextlib.suppress(OSError):
        kept = (data_dir / "trainer" / "worker-id").read_text().strip()
        if is_valid_id(kept):
            return kept
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname().split(".")[0]).strip("-")[:48] or "worker"
    return f"{host}-{hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]}"


def expected_gpu_count(path: str) -> int | None:
    """How many GPUs the service install recorded (a JSON list); None without a readable record."""
    if not path:
        return None
    try:
        recorded = msgspec.json.decode(Path(path).read_bytes(), type=list[dict[str, Any]])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return len(recorded)


class PsutilSampler:
    """The real sampler: CPU, load, memory, swap, disks, network, stoker's processes (psutil), GPUs (NVML)."""

    def __init__(self, host_id: str, paths: Sequence[Path], gpus: NvmlGpus | None = None,
                 expected_gpus: int | None = None) -> None:
        self.host_id, self.hostname = host_id, socket.gethostname()
        self.expected_gpus = expected_gpus  # recorded at service install (see expected_gpu_count)
        self.paths = list(dict.fromkeys(str(Path(p).resolve()) for p in paths))
        self.gpus = gpus if gpus is not None else NvmlGpus()
        self.history: dict[str, deque[tuple[float, int]]] = {p: deque(maxlen=DISK_HISTORY) for p in self.paths}
        self.me = psutil.Process()
        self._procs: dict[int, psutil.Process] = {}  # kept so that cpu_percent measures since the last sample
        psutil.cpu_percent(None, percpu=True)  # the first call only starts the measurement

    def sample(self, now: datetime) -> HostSample:
        """One sample of this machine."""
        memory, swap = psutil.virtual_memory(), psutil.swap_memory()
        per_cpu = tuple(psutil.cpu_percent(None, percpu=True))
        gpus, note = self.gpus.read()
        return HostSample(
            host_id=self.host_id, hostname=self.hostname[:255],
            cpu_percent=round(sum(per_cpu) / len(per_cpu), 2) if per_cpu else 0.0, per_cpu=per_cpu,
            load=tuple(round(x, 3) for x in os.getloadavg()) if hasattr(os, "getloadavg") else (),
            memory_percent=memory.percent, memory_available_bytes=memory.available, swap_percent=swap.percent,
            swap_used_bytes=swap.used,
            disks=self._disks(), network=self._network(), processes=self._processes(), gpus=gpus,
            gpu_note=note, at=now, gpus_expected=self.expected_gpus if self.gpus.installed else None)

    def close(self) -> None:
        """Shut NVML down."""
        self.gpus.close()

    def _disks(self) -> tuple[DiskFigures, ...]:
        out = []
        for path in self.paths:
            try:
                usage = psutil.disk_usage(path)
            except OSError:
                continue  # the folder went away (a job's work dir): nothing to say about it
            points = self.history[path]
            points.append((time.monotonic(), usage.used))
            out.append(DiskFigures(path=path, percent=usage.percent, free_bytes=usage.free, total_bytes=usage.total,
                                   full_in_h=full_in_hours(list(points), usage.free)))
        return tuple(out)

    def _network(self) -> tuple[NetFigures, ...]:
        counters = psutil.net_io_counters(pernic=True)
        return tuple(NetFigures(interface=name[:255], sent_bytes=c.bytes_sent, recv_bytes=c.bytes_recv)
                     for name, c in sorted(counters.items())[:MAX_INTERFACES])

    def _processes(self) -> tuple[ProcessFigures, ...]:
        """This process, the one that started it (a supervisor or a worker agent) and everything under that."""
        try:
            root = self.me.parent() or self.me
            tree = [root, *root.children(recursive=True)][:MAX_PROCESSES]
        except psutil.Error:
            tree = [self.me]
        known = {p.pid: self._procs.get(p.pid, p) for p in tree}
        self._procs = known
        out = []
        for proc in known.values():
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    out.append(ProcessFigures(pid=proc.pid, name=proc.name()[:255], cpu_percent=proc.cpu_percent(None),
                                              rss_bytes=proc.memory_info().rss, threads=proc.num_threads(),
                                              open_files=_open_files(proc)))
        return tuple(out)


def _open_files(proc: psutil.Process) -> int:
    try:
        return proc.num_fds() if hasattr(proc, "num_fds") else len(proc.open_files())
    except psutil.Error:
        return 0


class NvmlGpus:
    """GPU figures through NVML when `nvidia-ml-py` and a driver are there; otherwise none, with the reason."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        self.events: Any = None
        self.xids: dict[int, int] = {}
        self.note = ""
        self.installed = True  # nvidia-ml-py is there: NVML can count GPUs once a driver answers
        self._start()

    def _start(self) -> None:
        try:
            import pynvml
        except ImportError:
            self.installed = False
            self.note = "no GPU figures: nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            self.note = f"no GPU figures: NVML unavailable ({exc})"
            return
        self.nvml = pynvml
        self.note = "" if self.handles else "no GPUs found by NVML"
        self._watch_xids()

    def _watch_xids(self) -> None:
        nvml = self.nvml
        with contextlib.suppress(nvml.NVMLError, AttributeError):
            self.events = nvml.nvmlEventSetCreate()
            for handle in self.handles:
                with contextlib.suppress(nvml.NVMLError):
                    nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self.events)

    def read(self) -> tuple[tuple[GpuFigures, ...], str]:
        """Figures of every GPU, and why there are none when there are none."""
        if self.nvml is None and self.installed:
            self._start()  # at boot the driver may load after the monitor started
        if self.nvml is None:
            return (), self.note
        self._drain_xids()
        return tuple(self._one(i, h) for i, h in enumerate(self.handles)), self.note

    def _drain_xids(self) -> None:
        if self.events is None:
            return
        for _ in range(100):
            try:
                data = self.nvml.nvmlEventSetWait(self.events, 0)
            except self.nvml.NVMLError:
                return  # timeout: nothing pending
            try:
                index = self.nvml.nvmlDeviceGetIndex(data.device)
            except self.nvml.NVMLError:
                index = -1
            self.xids[index] = self.xids.get(index, 0) + 1

    def _one(self, index: int, handle: Any) -> GpuFigures:
        nvml = self.nvml

        def get(fn, *args):
            try:
                return fn(handle, *args)
            except nvml.NVMLError:
                return None

        util, memory = get(nvml.nvmlDeviceGetUtilizationRates), get(nvml.nvmlDeviceGetMemoryInfo)
        power = get(nvml.nvmlDeviceGetPowerUsage)
        name = get(nvml.nvmlDeviceGetName)
        ecc = get(nvml.nvmlDeviceGetTotalEccErrors, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)
        corrected = get(nvml.nvmlDeviceGetTotalEccErrors, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC)
        limit = get(nvml.nvmlDeviceGetEnforcedPowerLimit)
        procs = get(nvml.nvmlDeviceGetComputeRunningProcesses)
        return GpuFigures(
            index=index, name=(name.decode() if isinstance(name, bytes) else name or "")[:255],
            utilization_percent=float(util.gpu) if util is not None else None,
            memory_used_bytes=memory.used if memory is not None else None,
            memory_total_bytes=memory.total if memory is not None else None,
            temperature_c=get(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
            power_w=power / 1000.0 if power is not None else None,
            sm_clock_mhz=get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM),
            memory_clock_mhz=get(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM),
            power_limit_w=limit / 1000.0 if limit is not None else None,
            throttle_reasons=get(nvml.nvmlDeviceGetCurrentClocksThrottleReasons) or 0,
            ecc_errors=ecc or 0, ecc_corrected=corrected or 0, xid_errors=self.xids.get(index, 0),
            processes=tuple(p.pid for p in procs)[:MAX_PROCESSES] if procs is not None else None)

    def close(self) -> None:
        """Release NVML."""
        if self.nvml is not None:
            with contextlib.suppress(self.nvml.NVMLError):
                if self.events is not None:
                    self.nvml.nvmlEventSetFree(self.events)
                self.nvml.nvmlShutdown()
            self.nvml = None
