"""Checkpoints on the agent's side: names, digests, and choosing the newest good one to resume from.

What a checkpoint file holds, and how it is written, read and checked, is in `checkpoint_format`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.trainer.checkpoint_format import verify
from services.trainer.sdk import CheckpointCorrupt

if TYPE_CHECKING:
    from contracts.dispatch import CheckpointRef

FORMAT_HEADER = "Stoker-Format"


class CheckpointUnavailable(RuntimeError):
    """The object store could not be reached to fetch or store a checkpoint (worth retrying later)."""


def checkpoint_name(job_id: str, attempt: int, iteration: int) -> str:
    """The object name of a checkpoint: `<job_id>/<attempt>-<iteration>`."""
    return f"{job_id}/{attempt}-{iteration}"


def nats_digest_hex(digest: str | None) -> str | None:
    """An object store digest (`SHA-256=<base64url>`) as hex; None when absent or malformed."""
    if not digest or not digest.upper().startswith("SHA-256="):
        return None
    try:
        return base64.urlsafe_b64decode(digest.split("=", 1)[1] + "==").hex()
    except ValueError:
        return None


@dataclass(frozen=True)
class Fetched:
    """A downloaded checkpoint: where it lies, its actual SHA-256, and its format."""

    path: Path
    sha256: str
    format: str


@dataclass
class Choice:
    """The checkpoint to resume from (or none), the names that failed their check, and why each failed."""

    ref: CheckpointRef | None = None
    fetched: Fetched | None = None
    corrupt: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


Fetch = Callable[["CheckpointRef"], Awaitable["Fetched | None"]]


def digest_ok(ref: CheckpointRef, sha256: str | None) -> bool:
    """Whether a blob's digest is the one the event recorded."""
    return sha256 is not None and sha256.lower() == ref.sha256.lower()


def newest_first(refs: Sequence[CheckpointRef]) -> list[CheckpointRef]:
    """Refs ordered newest first by iteration (stable, so equal iterations keep the given order)."""
    return sorted(refs, key=lambda r: -r.iteration)


async def problem_with(ref: CheckpointRef, fetched: Fetched | None) -> str | None:
    """Why a fetched checkpoint cannot be resumed from (missing, digest, format), or None when it can."""
    if fetched is None:
        return "missing"
    if not digest_ok(ref, fetched.sha256):
        return f"SHA-256 {fetched.sha256 or 'unknown'} is not the recorded {ref.sha256}"
    try:
        await asyncio.to_thread(verify, fetched.path, fetched.format)
    except CheckpointCorrupt as exc:
        return str(exc)
    return None


async def choose(refs: Sequence[CheckpointRef], fetch: Fetch) -> Choice:
    """The newest checkpoint whose SHA-256 and format check out; missing or corrupt ones are named and skipped."""
    choice = Choice()
    for ref in newest_first(refs):
        fetched = await fetch(ref)
        problem = await problem_with(ref, fetched)
        if problem is None:
            choice.ref, choice.fetched = ref, fetched
            return choice
        if fetched is not None:
            fetched.path.unlink(missing_ok=True)
        choice.corrupt.append(ref.name)
        choice.reasons[ref.name] = problem
    return choice
