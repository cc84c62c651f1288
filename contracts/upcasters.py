"""Upcasters: pure functions that lift an old event payload to the next schema version on read.

A breaking change to an event adds a version (`schema` on the class) and one upcaster from the
previous version; old events in the log are never rewritten, they are upcast each time they are read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

# (event type, version it reads) -> function producing version + 1
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register `fn` as the upcaster of `event_type` from `from_version` to `from_version + 1`."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def upcast(event_type: str, version: int, target: int, payload: Payload) -> Payload:
    """Apply the chain of upcasters from `version` up to `target`; KeyError names a missing step."""
    while version < target:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise KeyError(f"no upcaster for {event_type} from schema {version} to {version + 1}")
        payload = step(payload)
        version += 1
    return payload


@upcaster("JobSubmitted", 1)
def job_submitted_v1_to_v2(payload: Payload) -> Payload:
    """Schema 1 only knew training runs and called the iteration budget `iterations`."""
    lifted = {k: v for k, v in payload.items() if k != "iterations"}
    lifted.setdefault("kind", "train")
    if "iterations" in payload:
        lifted["max_iterations"] = payload["iterations"]
    return lifted
