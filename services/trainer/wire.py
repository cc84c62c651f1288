"""What the agent and a job's child process say to each other: length-prefixed msgpack frames."""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from contracts.jobspec import JobSpec

PROGRESS_INTERVAL_S = 0.5  # at most 2 samples/s per job: each one wakes the agent, NATS, the gateway and the monitor

if TYPE_CHECKING:  # the job process never needs asyncio; keep it out of the fork template
    from asyncio import StreamReader, StreamWriter

_HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


class Frame(msgspec.Struct, tag_field="op", tag=True, kw_only=True, array_like=False):
    """Base of every frame."""


class Resume(msgspec.Struct, kw_only=True):
    """A verified checkpoint the child may load: a local file, its format and iteration."""

    path: str
    format: str
    iteration: int
    name: str


class Start(Frame, JobSpec, kw_only=True):
    """Agent → spare child: run this attempt. The job's spec travels flat (contracts/jobspec.py)."""

    job_id: str
    attempt: int
    worker_id: str
    workload: str  # the name it runs: an evaluation of `X` runs `X-eval` where the worker has it
    target: str  # module:function the workload name resolved to
    registered: bool = False  # an installed entry point's target (else the function must be marked @workload)
    gpu_indices: tuple[int, ...] = ()
    spool_dir: str
    resume: Resume | None = None
    asset_path: str | None = None  # the job's map, fetched and digest-checked (JobSpec's map_sha256)
    progress_interval_s: float = PROGRESS_INTERVAL_S
    traceparent: str = ""  # the attempt's trace context; the job's code sees it as $TRACEPARENT


class Ack(Frame, kw_only=True):
    """Agent → child: checkpoint `seq` is stored (or why not)."""

    seq: int
    ok: bool
    error: str = ""


class Progress(Frame, kw_only=True):
    """Child → agent: one (coalesced) progress sample; `at` is epoch seconds when it was taken."""

    iteration: int
    loss: float | None = None
    metrics: dict[str, float] = {}
    at: float


class Episode(Frame, kw_only=True):
    """Child → agent: one finished evaluation episode."""

    episode: int
    score: float
    figures: dict[str, float] = {}
    log: list[dict[str, Any]] = []
    at: float


class Saved(Frame, kw_only=True):
    """Child → agent: a checkpoint is written to `path`; please store it and report it."""

    seq: int
    iteration: int
    path: str
    sha256: str
    size: int
    format: str


class Done(Frame, kw_only=True):
    """Child → agent: the workload returned or raised; `stop_seen` says whether it saw a stop request.

    `reusable`: the process waits for another Start of the same workload instead of exiting (the agent
    sends one, or closes the socket and the process exits).
    """

    outcome: Literal["completed", "failed"]
    result: dict[str, Any] = {}
    error: str = ""
    traceback: str = ""
    retryable: bool = False
    stop_seen: bool = False
    reusable: bool = False


AnyFrame = Start | Ack | Progress | Episode | Saved | Done
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyFrame)


def pack(frame: Frame) -> bytes:
    """One frame with its length prefix."""
    body = _encoder.encode(frame)
    return _HEADER.pack(len(body)) + body


def unpack(body: bytes) -> Frame:
    """Decode a frame's body (without its prefix)."""
    return _decoder.decode(body)


def send(sock: socket.socket, frame: Frame) -> None:
    """Blocking send of one frame (child side)."""
    sock.sendall(pack(frame))


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> Frame | None:
    """Blocking receive of one frame (child side); None at end of stream."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    body = _recv_exactly(sock, size)
    return None if body is None else unpack(body)


async def read(reader: StreamReader) -> Frame | None:
    """Receive one frame (agent side); None at end of stream."""
    from asyncio import IncompleteReadError

    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is over the limit")
        return unpack(await reader.readexactly(size))
    except (IncompleteReadError, ConnectionError):
        return None


def write(writer: StreamWriter, frame: Frame) -> None:
    """Queue one frame for the child (agent side; the transport buffers it)."""
    writer.write(pack(frame))
