"""Before a worker registers: wait until it sees the GPUs recorded at service install (gpucheck decides).

`python -m services.trainer.gpus` prints the GPUs this machine shows (JSON, a list of contracts.events.Gpu):
`stoker service install` records them this way, through the same detection the worker uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from contracts.events import Gpu
from eventstore.observability import get_logger
from eventstore.sdnotify import Notifier
from services.trainer.capabilities import detect_gpus
from services.trainer.gpucheck import GpuPolicy, decide_gpus
from services.trainer.settings import TrainerSettings

log = get_logger(component="gpus")
Probe = Callable[[bool], list[Gpu]]


def read_expected(path: str) -> list[Gpu]:
    """The recorded GPUs; none when no record is configured. A record that cannot be read is said, not guessed."""
    if not path:
        return []
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=list[Gpu])
    except FileNotFoundError:
        log.warning("no GPU record at the configured path: not checking GPUs", path=path)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("the GPU record cannot be read: not checking GPUs", path=path, error=str(exc))
    return []


async def wait_for_expected_gpus(settings: TrainerSettings, stop: asyncio.Event, notifier: Notifier,
                                 probe: Probe = detect_gpus, policy: GpuPolicy | None = None) -> list[Gpu] | None:
    """The GPUs seen once they include the expected ones (at once without an expectation); None if stopped first."""
    expected = read_expected(settings.expected_gpus_file) if settings.detect_gpus else []
    seen = await asyncio.to_thread(probe, settings.detect_gpus)
    policy = policy or GpuPolicy(alert_after_s=settings.gpu_alert_after_s)
    first, attempt, alerted = time.monotonic(), 0, False
    while expected:
        decision = decide_gpus(expected, seen, attempt, time.monotonic() - first, alerted, policy)
        if decision.action == "ready":
            log.info("GPUs as at install", gpus=[g.name for g in seen])
            break
        if decision.action == "alert":
            alerted = True
            log.error("ALERT: " + decision.message, missing=list(decision.missing), waited_s=round(
                time.monotonic() - first, 1), alert="gpu_missing")
        else:
            log.warning(decision.message, missing=list(decision.missing), retry_in_s=decision.delay_s)
        notifier.status(("ALERT: " if alerted else "waiting: ") + decision.message)
        notifier.extend_start(decision.delay_s + 90.0)  # a GPU probe (torch) may take a while itself
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), decision.delay_s)
        if stop.is_set():
            return None
        attempt += 1
        seen = await asyncio.to_thread(probe, settings.detect_gpus)
    return seen


if __name__ == "__main__":
    sys.stdout.write(msgspec.json.encode(detect_gpus()).decode() + "\n")
