"""Whether this worker sees the GPUs it saw when its service was installed, and what to do if not. Pure.

At boot a service may start before the GPU driver has loaded (a known race of systemd units): torch and
NVML then see no device, and a worker that registered anyway would train on the CPU without a word. So a
worker with an expectation (`[trainer] expected_gpus_file`, written by `stoker service install`) waits, with
backoff, until the devices are back; past `alert_after_s` it raises an alert once and keeps waiting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import msgspec

from contracts.events import Gpu

Action = Literal["ready", "wait", "alert"]


class GpuPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long to wait between looks, and when silence becomes an alert."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    alert_after_s: float = 60.0


class GpuDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Register now (`ready`), look again after `delay_s` (`wait`), or raise the alert and look again (`alert`)."""

    action: Action
    delay_s: float = 0.0
    missing: tuple[str, ...] = ()
    message: str = ""


def missing_gpus(expected: Sequence[Gpu], seen: Sequence[Gpu]) -> tuple[str, ...]:
    """The expected devices (by model name, counted) not among those seen; extra devices are fine."""
    short = Counter(g.name for g in expected) - Counter(g.name for g in seen)
    return tuple(sorted(short.elements()))


def describe(gpus: Sequence[str]) -> str:
    """`2 x NVIDIA H200, 1 x NVIDIA L4`; `none` when empty."""
    counts = Counter(gpus)
    return ", ".join(f"{n} x {name}" for name, n in sorted(counts.items())) or "none"


def backoff(attempt: int, policy: GpuPolicy) -> float:
    """The delay before look number `attempt + 1`: doubling from `first_delay_s`, capped."""
    return min(policy.max_delay_s, policy.first_delay_s * 2 ** min(attempt, 30))


def decide_gpus(expected: Sequence[Gpu], seen: Sequence[Gpu], attempt: int, waited_s: float, alerted: bool,
                policy: GpuPolicy | None = None) -> GpuDecision:
    """What to do after look number `attempt` (from 0), `waited_s` after the first, the alert raised or not."""
    policy = policy or GpuPolicy()
    missing = missing_gpus(expected, seen)
    if not missing:
        return GpuDecision(action="ready", message=f"GPUs as at install: {describe([g.name for g in seen])}")
    message = (f"GPUs missing: expected {describe([g.name for g in expected])} (seen at install), "
               f"seen {describe([g.name for g in seen])}; not starting on the CPU instead "
               f"(driver not loaded yet? check `nvidia-smi` in the service's context)")
    action: Action = "alert" if waited_s >= policy.alert_after_s and not alerted else "wait"
    return GpuDecision(action=action, delay_s=backoff(attempt, policy), missing=missing, message=message)
