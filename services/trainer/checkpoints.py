"""Checkpoints: names, formats, digests, and choosing the newest good one to resume from."""

from __future__ import annotations

import base64
import hashlib
import io
import pickle
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contracts.dispatch import CheckpointRef

FORMAT_HEADER = "Stoker-Format"
FORMATS = ("torch", "pickle", "bytes")
_CHUNK = 1 << 20


class CheckpointUnavailable(RuntimeError):
    """The object store could not be reached to fetch or store a checkpoint (worth retrying later)."""


def checkpoint_name(job_id: str, attempt: int, iteration: int) -> str:
    """The object name of a checkpoint: `<job_id>/<attempt>-<iteration>`."""
    return f"{job_id}/{attempt}-{iteration}"


def choose_format(obj: Any) -> str:
    """bytes stay bytes; anything else goes through torch.save when the job uses torch, else pickle."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return "bytes"
    # A job that never imported torch holds no tensors; pickle is then exact and far cheaper to load.
    return "torch" if "torch" in sys.modules else "pickle"


def serialize(obj: Any, fmt: str, out: io.BufferedIOBase) -> None:
    """Write `obj` to `out` in format `fmt`."""
    if fmt == "bytes":
        out.write(bytes(obj))
    elif fmt == "torch":
        import torch

        torch.save(obj, out)
    else:
        pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(data: io.BufferedIOBase, fmt: str, device: str = "cpu") -> Any:
    """Read back what `serialize` wrote."""
    if fmt == "bytes":
        return data.read()
    if fmt == "torch":
        import torch

        try:
            return torch.load(data, map_location=device, weights_only=True)
        except pickle.UnpicklingError:
            # The job's own checkpoint, written by the job's own code: arbitrary objects are allowed.
            data.seek(0)
            return torch.load(data, map_location=device, weights_only=False)
    return pickle.load(data)


def write_checkpoint(obj: Any, path: Path) -> tuple[str, str, int]:
    """Serialise `obj` into `path`; returns (format, sha256 hex, size)."""
    fmt = choose_format(obj)
    with path.open("wb") as out:
        serialize(obj, fmt, out)
    digest, size = file_sha256(path)
    return fmt, digest, size


def read_checkpoint(path: Path, fmt: str, device: str = "cpu") -> Any:
    """Load a checkpoint file written by `write_checkpoint`."""
    with path.open("rb") as data:
        return deserialize(data, fmt if fmt in FORMATS else sniff_format(path), device)


def sniff_format(path: Path) -> str:
    """Guess a format when the object carries none: zip → torch, pickle opcode → pickle, else bytes."""
    with path.open("rb") as data:
        head = data.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    return "pickle" if head[:1] == b"\x80" else "bytes"


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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
    """The checkpoint to resume from (or none) and the names that failed their check."""

    ref: CheckpointRef | None = None
    fetched: Fetched | None = None
    corrupt: list[str] = field(default_factory=list)


Fetch = Callable[["CheckpointRef"], Awaitable["Fetched | None"]]


def digest_ok(ref: CheckpointRef, sha256: str | None) -> bool:
    """Whether a blob's digest is the one the event recorded."""
    return sha256 is not None and sha256.lower() == ref.sha256.lower()


def newest_first(refs: Sequence[CheckpointRef]) -> list[CheckpointRef]:
    """Refs ordered newest first by iteration (stable, so equal iterations keep the given order)."""
    return sorted(refs, key=lambda r: -r.iteration)


async def choose(refs: Sequence[CheckpointRef], fetch: Fetch) -> Choice:
    """The newest checkpoint whose SHA-256 matches; missing or corrupt ones are named and skipped."""
    choice = Choice()
    for ref in newest_first(refs):
        fetched = await fetch(ref)
        if fetched is not None and digest_ok(ref, fetched.sha256):
            choice.ref, choice.fetched = ref, fetched
            return choice
        if fetched is not None:
            fetched.path.unlink(missing_ok=True)
        choice.corrupt.append(ref.name)
    return choice
