"""What this worker offers (hardware, labels, slots) and who it is (a stable worker id)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil

from contracts.events import Gpu, WorkerCapabilities
from eventstore.credentials import local_worker_id
from eventstore.observability import get_logger
from services.trainer.settings import TrainerSettings
from services.trainer.workloads_registry import Registry

log = get_logger(component="capabilities")
MAX_ADDRESSES = 16
MAX_WORKLOADS = 1000

# Run in a throwaway interpreter so the agent never pays torch's import (seconds, hundreds of MB).
_TORCH_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps([{'index': i, 'name': torch.cuda.get_device_name(i),"
    " 'memory_mb': torch.cuda.get_device_properties(i).total_memory // 2**20} for i in range(n)]))\n"
)


def worker_id(settings: TrainerSettings, data_dir: Path) -> str:
    """The configured id, else the one kept in the data dir, else a derived one (then kept)."""
    return local_worker_id(settings.worker_id, data_dir, socket.gethostname())


def addresses() -> tuple[str, ...]:
    """Non-loopback IPv4 then IPv6 addresses of this host."""
    v4, v6 = [], []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            address = entry.address.split("%")[0]
            if entry.family == socket.AF_INET and not address.startswith("127."):
                v4.append(address)
            elif entry.family == socket.AF_INET6 and address != "::1" and not address.startswith("fe80"):
                v6.append(address)
    return tuple(dict.fromkeys(v4 + v6))[:MAX_ADDRESSES]


def gpus_from_nvml() -> list[Gpu] | None:
    """GPUs as NVML sees them; None when pynvml is not installed or NVML does not start."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver; any failure means "ask someone else"
        return None
    try:
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            out.append(Gpu(index=index, name=name.decode() if isinstance(name, bytes) else name, memory_mb=memory))
        return out
    finally:
        pynvml.nvmlShutdown()


def gpus_from_torch(timeout: float = 60.0) -> list[Gpu]:
    """GPUs as torch.cuda sees them, probed in a child interpreter; none if torch is absent or fails."""
    try:
        done = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
                              timeout=timeout, check=True)
        return [Gpu(**g) for g in json.loads(done.stdout.strip().splitlines()[-1])]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, TypeError) as exc:
        log.info("no GPUs from torch", reason=exc.__class__.__name__)
        return []


def gpu_driver_present() -> bool:
    """Whether this host looks like it has an NVIDIA or ROCm driver (else asking torch is pointless)."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd"))


def detect_gpus(enabled: bool = True) -> list[Gpu]:
    """NVML first, then torch.cuda (only where a GPU driver is present), else none."""
    if not enabled:
        return []
    found = gpus_from_nvml()
    if found is not None:
        return found
    return gpus_from_torch() if gpu_driver_present() else []


def stoker_version() -> str:
    """The installed stoker version."""
    try:
        return metadata.version("stoker")
    except metadata.PackageNotFoundError:
        return "0"


def workload_names(registry: Registry) -> tuple[str, ...]:
    """The registered workloads this worker advertises (the names a job may give; see contracts.workloads)."""
    return tuple(name for name in registry.names() if 0 < len(name) <= 200)[:MAX_WORKLOADS]


def detect(settings: TrainerSettings, gpus: list[Gpu] | None = None) -> WorkerCapabilities:
    """This host's capabilities; `gpus` skips GPU detection (tests, or already known)."""
    found = detect_gpus(settings.detect_gpus) if gpus is None else gpus
    slots = settings.slots or len(found) or settings.cpu_slots
    return WorkerCapabilities(
        hostname=socket.gethostname()[:255] or "localhost", addresses=addresses(),
        cpu_cores=max(1, os.cpu_count() or 1), ram_mb=psutil.virtual_memory().total // 2**20,
        gpus=tuple(found), labels=tuple(settings.labels), slots=slots, version=stoker_version()[:64],
        workloads=workload_names(Registry()), target_modules=settings.target_modules)
