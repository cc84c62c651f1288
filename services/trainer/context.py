"""The JobContext a workload gets inside its child process: cheap reports, durable checkpoints."""

from __future__ import annotations

import itertools
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from services.trainer import wire
from services.trainer.checkpoint_format import read_checkpoint, write_checkpoint
from services.trainer.sdk import CheckpointError

Sample = tuple[int, Any, dict[str, Any], float]  # iteration, loss, metrics, epoch seconds


class Coalescer:
    """At most one sample per `interval`; a sample held back is sent later, never lost."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_sent = -math.inf
        self.pending: Sample | None = None

    def offer(self, sample: Sample, now: float) -> Sample | None:
        """The sample to send now, or None when it is held back as the pending one."""
        if now - self.last_sent >= self.interval:
            self.last_sent, self.pending = now, None
            return sample
        self.pending = sample
        return None

    def due(self, now: float) -> Sample | None:
        """The pending sample once its interval has passed."""
        if self.pending is not None and now - self.last_sent >= self.interval:
            return self.take(now)
        return None

    def take(self, now: float) -> Sample | None:
        """The pending sample, whatever the time (before a checkpoint or at the end)."""
        sample, self.pending = self.pending, None
        if sample is not None:
            self.last_sent = now
        return sample


def to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as plain floats (tensors and numpy scalars included); non-numbers are dropped."""
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def progress_frame(sample: Sample) -> wire.Progress:
    """The frame of one sample."""
    iteration, loss, metrics, at = sample
    loss_value = None if loss is None else float(loss)
    if loss_value is not None and not math.isfinite(loss_value):
        metrics = {**metrics, "loss_nonfinite": 1.0}
        loss_value = None
    return wire.Progress(iteration=int(iteration), loss=loss_value, metrics=to_floats(metrics), at=at)


def end_job_group(code: int = 0) -> None:
    """End this job process and everything it started (its own process group); never returns."""
    if os.getpgid(0) == os.getpid():  # never the agent's group, should the job not lead its own
        os.killpg(0, 9)
    os._exit(code)


def _agent_gone() -> None:
    # A job must never run on without its worker: the scheduler would run it twice.
    end_job_group(1)


class Channel:
    """The child's end of its socket: sends under a lock; checkpoint acks read inline or by a listener."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.acks: dict[int, wire.Ack] = {}
        self.acked = threading.Condition()
        self.finishing = False
        self.listening = False

    def send(self, frame: wire.Frame) -> None:
        """Send one frame to the agent."""
        data = wire.pack(frame)
        with self.lock:
            self.sock.sendall(data)

    def wait_ack(self, seq: int) -> wire.Ack:
        """Block until the agent acknowledges checkpoint `seq`."""
        if not self.listening:
            while True:  # nothing but acks comes this way, so the caller can read them itself
                frame = self._receive()
                if frame is None:
                    _agent_gone()
                if isinstance(frame, wire.Ack) and frame.seq == seq:
                    return frame
        with self.acked:
            self.acked.wait_for(lambda: seq in self.acks)
            return self.acks.pop(seq)

    def _receive(self) -> wire.Frame | None:
        try:
            return wire.recv(self.sock)
        except OSError:
            return None

    def listen(self) -> None:
        """Listener thread (where the kernel cannot tie the job's life to its parent): acks, and EOF."""
        while (frame := self._receive()) is not None:
            if isinstance(frame, wire.Ack):
                with self.acked:
                    self.acks[frame.seq] = frame
                    self.acked.notify_all()
        if not self.finishing:
            _agent_gone()


class ChildContext:
    """Implements `services.trainer.sdk.JobContext` over the agent's socket."""

    def __init__(self, start: wire.Start, channel: Channel) -> None:
        self.job_id, self.attempt, self.kind = start.job_id, start.attempt, start.kind
        self.workload, self.params = start.workload, dict(start.params)
        self.params_version = start.params_version
        self.max_iterations, self.episodes = start.max_iterations, start.episodes
        self.device = "cuda" if start.gpu_indices else "cpu"
        self.asset_path = Path(start.asset_path) if start.asset_path else None
        self.assets = {self.asset_path.name: self.asset_path} if self.asset_path else {}
        self._start, self._channel = start, channel
        self._coalescer = Coalescer(start.progress_interval_s)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._stop_requested = False
        self._on_its_way: tuple[int, int] | None = None  # (seq, iteration) of a checkpoint the agent is storing
        self._flusher: threading.Thread | None = None
        self._finished = threading.Event()
        self.stop_seen = False

    def _start_flusher(self) -> None:
        # Only a job that reports faster than the interval needs someone to send its held-back sample.
        self._flusher = threading.Thread(target=self._flush_loop, name="stoker-progress", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._finished.wait(self._coalescer.interval):
            try:
                self.flush_due()
            except OSError:
                return

    def close(self) -> None:
        """The workload returned: stop the flusher, send what is held back, wait for the last checkpoint's store.

        Raises CheckpointError when that checkpoint could not be stored, as save_checkpoint would have.
        """
        self._finished.set()
        self.flush()
        self.settle_checkpoint()

    def join_flusher(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the flusher thread to end, after close()."""
        if self._flusher is not None:
            self._flusher.join(timeout)

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for (seen by the workload or not)."""
        return self._stop_requested

    def request_stop(self) -> None:
        """Called from the SIGTERM handler."""
        self._stop_requested = True

    @property
    def should_stop(self) -> bool:
        """True once the job was asked to stop: save a checkpoint and return soon."""
        if self._stop_requested:
            self.stop_seen = True
        return self._stop_requested

    def report(self, iteration: int, loss: float | None = None, **metrics: float) -> None:
        """Publish a progress sample (coalesced to a few per second; the newest is never dropped)."""
        now = time.monotonic()
        with self._lock:  # sends happen under the lock so samples never overtake each other
            sample = self._coalescer.offer((iteration, loss, metrics, time.time()), now)
            if sample is not None:
                self._channel.send(progress_frame(sample))
            elif self._flusher is None:
                self._start_flusher()

    def flush(self) -> None:
        """Send the held-back sample, if any."""
        with self._lock:
            sample = self._coalescer.take(time.monotonic())
            if sample is not None:
                self._channel.send(progress_frame(sample))

    def flush_due(self) -> None:
        """Send the held-back sample once its interval has passed (the flusher thread calls this)."""
        with self._lock:
            sample = self._coalescer.due(time.monotonic())
            if sample is not None:
                self._channel.send(progress_frame(sample))

    def report_episode(self, episode: int, *, score: float, log: list[dict[str, Any]] | None = None,
                       **figures: float) -> None:
        """Publish one finished evaluation episode at once (episodes are never coalesced)."""
        self._channel.send(wire.Episode(episode=int(episode), score=float(score), figures=to_floats(figures),
                                        log=list(log or []), at=time.time()))

    def save_checkpoint(self, obj: Any, iteration: int) -> None:
        """Write the checkpoint and hand it to the agent, which stores and reports it while the job goes on.

        One checkpoint is on its way at a time: this first waits for the one before to be stored (raising
        CheckpointError if it could not be), and the job's end waits for the last (`close`). The training loop
        pays for writing the file, not for its upload and the scheduler's round trip.
        """
        self.flush()
        self.settle_checkpoint()
        seq = next(self._seq)
        spool = Path(self._start.spool_dir)
        spool.mkdir(parents=True, exist_ok=True)
        path = spool / f"save-{self.attempt}-{iteration}-{seq}.ckpt"
        fmt, digest, size = write_checkpoint(obj, path)
        self._channel.send(wire.Saved(seq=seq, iteration=int(iteration), path=str(path), sha256=digest,
                                      size=size, format=fmt))
        self._on_its_way = (seq, int(iteration))

    def settle_checkpoint(self) -> None:
        """Wait until the checkpoint on its way (if any) is stored and reported; CheckpointError if it was not."""
        if self._on_its_way is None:
            return
        (seq, iteration), self._on_its_way = self._on_its_way, None
        ack = self._channel.wait_ack(seq)
        if not ack.ok:
            raise CheckpointError(f"checkpoint at iteration {iteration} was not stored: {ack.error}")

    def load_checkpoint(self) -> Any | None:
        """The newest good checkpoint (verified by the agent before the job started), or None."""
        resume = self._start.resume
        if resume is None:
            return None
        return read_checkpoint(Path(resume.path), resume.format, self.device)
