"""Following a job over /ws with no I/O: the cursors that make a reconnect resume exactly where it left off.

docs/websocket.md is the protocol. One `Follow` lives across every connection of one `follow()`: it
keeps a cursor per stream, asks each new connection to resume after them, drops anything at or before
them, and notices the event that ends the job. Both clients drive it, each with its own socket.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from contracts.events import AnyJobEvent
from contracts.status import final_status
from contracts.telemetry import EpisodeReport, JobProgress
from gateway.client.errors import Forbidden, InvalidRequest, Unavailable
from gateway.schemas.jobs import EpisodeSample, ProgressSample

Stream = Literal["events", "telemetry"]
Update = JobProgress | EpisodeReport
REFUSED = {4401: "the token is unknown, expired or revoked", 4403: "the token's role may not follow jobs",
           4429: "too many bad tokens from this address"}  # close codes not worth reconnecting after
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.1, 2.0


class Welcome(msgspec.Struct, tag="welcome"):
    positions: dict[Stream, int]
    ping_s: float = 20.0


class Subscribed(msgspec.Struct, tag="subscribed"):
    positions: dict[Stream, int]
    truncated: list[str] = []


class EventFrame(msgspec.Struct, tag="event"):
    stream: Stream
    seq: int
    event: msgspec.Raw


class ProgressFrame(msgspec.Struct, tag="progress"):
    stream: Stream
    seq: int
    data: JobProgress


class EpisodeFrame(msgspec.Struct, tag="episode"):
    stream: Stream
    seq: int
    data: EpisodeReport


class ErrorFrame(msgspec.Struct, tag="error"):
    code: int
    detail: str


class Kind(msgspec.Struct):
    """Only the `type` of a frame (to tell the frames this client reads from the rest)."""

    type: str


Frame = Welcome | Subscribed | EventFrame | ProgressFrame | EpisodeFrame | ErrorFrame
KNOWN = {"welcome", "subscribed", "event", "progress", "episode", "error"}
_frames = msgspec.json.Decoder(Frame)
_kinds = msgspec.json.Decoder(Kind)
_events = msgspec.json.Decoder(AnyJobEvent)


class Follow:
    """One job's live updates across connections: every report once, in order, until the job is over."""

    def __init__(self, job_id: str, from_start: bool = True) -> None:
        self.topic = f"job:{job_id}"
        # From the start: the job's whole history first. Otherwise reports from where telemetry stands on connecting.
        self.cursors: dict[str, int] | None = {"events": 0, "telemetry": 0} if from_start else None
        self.job_id = job_id
        self.over = False  # the job's final event arrived
        self.replayed = False  # this connection's `subscribed` arrived: what it resumed is all here
        self.ping_s = 20.0

    @property
    def done(self) -> bool:
        """Nothing more will come over the socket: the job is over and its resume has been replayed.

        The two streams have no order between them, so a replay brings the final event before the
        last progress reports; those (and any the live feed has not reached yet) come by `catch_up`.
        """
        return self.over and self.replayed

    def greet(self, text: str | bytes) -> bytes:
        """The subscribe to send after this connection's welcome (resuming after the cursors)."""
        frame = self._decode(text)
        if not isinstance(frame, Welcome):
            raise Unavailable(f"the gateway's /ws did not welcome the client (it said {text[:200]!r})")
        self.ping_s = frame.ping_s
        self.replayed = False
        if self.cursors is None:
            # Reports from now on, but the job's own events from its start (a few): one that ended before
            # this connection must still end the follow.
            self.cursors = {"events": 0, "telemetry": int(frame.positions.get("telemetry", 0))}
        return msgspec.json.encode({"type": "subscribe", "topics": [self.topic], "resume": self.cursors})

    def take(self, text: str | bytes) -> list[Update]:
        """What one frame adds: a progress or episode report not seen before (nothing for the rest)."""
        frame = self._decode(text)
        if isinstance(frame, ErrorFrame):
            raise InvalidRequest(f"the gateway refused to follow {self.topic}: {frame.detail}", frame.code)
        if isinstance(frame, Subscribed):
            self.replayed = True
            return []
        if not isinstance(frame, EventFrame | ProgressFrame | EpisodeFrame) or not self._advance(frame.stream,
                                                                                                 frame.seq):
            return []
        if isinstance(frame, EventFrame):
            self.over = self.over or self._ends(frame.event)
            return []
        return [frame.data]

    def catch_up(self, samples: list[ProgressSample], episodes: Sequence[EpisodeSample] = ()) -> list[Update]:
        """The job's progress and episode reports after the telemetry cursor, read over REST once the job is
        over, in telemetry order (both share the one cursor: neither list may move it past the other's)."""
        updates: list[tuple[int, Update]] = [
            (s.seq, JobProgress(job_id=self.job_id, attempt=s.attempt, worker_id=s.worker_id, iteration=s.iteration,
                                total=s.total, loss=s.loss, metrics=s.metrics, at=s.at)) for s in samples]
        updates += [(e.seq, EpisodeReport(job_id=self.job_id, attempt=e.attempt, episode=e.episode, score=e.score,
                                          figures=e.figures, log=e.log, at=e.at)) for e in episodes]
        updates.sort(key=lambda pair: pair[0])
        return [update for seq, update in updates if self._advance("telemetry", seq)]

    def _advance(self, stream: str, seq: int) -> bool:
        """Move a cursor on; False for a message at or before it (already seen)."""
        assert self.cursors is not None, "a frame before the welcome"
        if seq <= self.cursors.get(stream, 0):
            return False
        self.cursors[stream] = seq
        return True

    @staticmethod
    def _ends(raw: msgspec.Raw) -> bool:
        try:
            return final_status(_events.decode(raw)) is not None
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False  # an event of a newer gateway this client does not know: not one that ends the job

    @staticmethod
    def _decode(text: str | bytes) -> Frame | None:
        if _kinds.decode(text).type not in KNOWN:
            return None  # pings, pongs and whatever else this client has no use for
        return _frames.decode(text)

    @property
    def silence_s(self) -> float:
        """How long a connection may say nothing before it is taken for dead (the server pings every `ping_s`)."""
        return 2 * self.ping_s + 5


def refused(code: int | None, reason: str) -> Forbidden | None:
    """The error a close code means when reconnecting cannot help (a revoked token), else None."""
    if code in REFUSED:
        return Forbidden(f"/ws closed the connection: {reason or REFUSED[code]}", 401 if code == 4401 else 403)
    return None


class Reconnect:
    """How long to wait before the next connection attempt, and when to give up (`patience_s` without one)."""

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s
        self.connected()

    def connected(self) -> None:
        """A connection worked: back off from the start again."""
        self.since, self.delay = time.monotonic(), RECONNECT_FIRST_S

    def next_delay(self, why: Any) -> float:
        """The pause before trying again; Unavailable once `patience_s` has gone by without a connection."""
        if time.monotonic() - self.since > self.patience_s:
            raise Unavailable(f"lost the gateway's /ws and could not reconnect within {self.patience_s:g} s: {why}")
        delay, self.delay = self.delay, min(self.delay * 2, RECONNECT_MAX_S)
        return delay


def progress_bar(job: Any) -> Any | None:
    """A tqdm bar for the job (terminal or notebook) when tqdm is installed, else None."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=job.max_iterations or job.episodes, desc=f"{job.workload} {job.id}", unit="it")


def advance_bar(bar: Any | None, update: Update) -> None:
    """Show an update on the bar (iterations of a training run, episodes of an evaluation)."""
    if bar is None:
        return
    done = update.iteration if isinstance(update, JobProgress) else update.episode
    if done > bar.n:
        bar.update(done - bar.n)
