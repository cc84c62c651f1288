"""How many intra-op threads a job process gets: an equal share of this machine's cores per slot.

torch's CPU kernels run on an OpenMP pool whose size libgomp reads from OMP_NUM_THREADS once, when the
library loads (in the zygote, or in a job process that imports torch itself), so the agent sets it in its
own environment before any job process exists.

Why a share, and why threads that spin: measured with bench/training.py on 2 cores (2048 updates/s),
  one job alone, 2 threads spinning at barriers (libgomp's default)       143-156
  one job alone, 1 thread                                                 110-122
  one job alone, 2 threads sleeping at barriers (OMP_WAIT_POLICY=PASSIVE)   86-94
  two jobs at once, 2 threads each, spinning                                 8 each
  two jobs at once, 2 threads each, sleeping                               103-107 each
Spinning is fastest while a job's threads have the cores to themselves and ruinous once jobs share them;
sleeping costs a lone job 40 %. With one share per slot no two jobs' threads contend, so they may spin: a
worker with one slot (the default without GPUs) gives its job the whole machine, one with N slots gives
each job cores // N. A value set in the worker's environment wins (OMP_NUM_THREADS, OMP_WAIT_POLICY).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def thread_environment(env: Mapping[str, str], cores: int, slots: int) -> dict[str, str]:
    """What to add to `env` so each of `slots` concurrent jobs gets an equal share of `cores`. Pure."""
    if "OMP_NUM_THREADS" in env:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, slots)))}
