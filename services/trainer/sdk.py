"""The job SDK: what a workload sees of stoker while it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

WORKLOAD_MARK = "__stoker_workload__"
F = TypeVar("F", bound=Callable[..., Any])


def workload(fn: F) -> F:
    """Mark a function as a stoker workload, so that a job may name it as `module:function`."""
    setattr(fn, WORKLOAD_MARK, True)
    return fn


class CheckpointError(RuntimeError):
    """`save_checkpoint` could not store the checkpoint durably (the object store stayed unreachable)."""


class UnsupportedCheckpoint(TypeError):
    """`save_checkpoint` was given something a checkpoint may not hold (README: "What a checkpoint may hold")."""


class CheckpointCorrupt(ValueError):
    """A stored checkpoint is not in a format stoker reads (a pickle, say); it is never loaded."""


class JobContext(Protocol):
    """Handed to a workload's ``run(ctx)``; the workload reports through it and checkpoints through it."""

    job_id: str
    attempt: int
    kind: str  # "train" or "eval"
    workload: str
    params: dict[str, Any]
    max_iterations: int | None  # training runs
    episodes: int | None  # evaluation runs
    device: str  # "cpu" or "cuda" (CUDA_VISIBLE_DEVICES already narrowed to the job's GPUs)
    asset_path: Path | None  # the job's map (`map_id`), fetched and checked against its SHA-256; None without one
    assets: dict[str, Path]  # every map the job has, by file name (one today: the asset_path)

    def report(self, iteration: int, loss: float | None = None, **metrics: float) -> None:
        """Publish a progress sample (cheap; call it every step if you like, it is rate-limited)."""

    def report_episode(self, episode: int, *, score: float, log: list[dict[str, Any]] | None = None,
                       **figures: float) -> None:
        """Publish one finished evaluation episode: its figures and, optionally, its move-by-move log."""

    def save_checkpoint(self, obj: Any, iteration: int) -> None:
        """Store a checkpoint durably, so the job can resume anywhere: plain data, tensors, or bytes.

        Returns once it is stored and the scheduler knows of it; raises CheckpointError if it cannot be,
        UnsupportedCheckpoint if `obj` holds anything but None, bool, int, float, str, bytes, lists,
        tuples, dicts with str or int keys and torch tensors (no pickled objects).
        """

    def load_checkpoint(self) -> Any | None:
        """The newest good checkpoint: this job's own, or for an evaluation the source job's; None if none.

        The worker checked its digest and format before the job started (skipping bad ones); it is
        loaded without unpickling anything, and CheckpointCorrupt is raised should it still not load.
        """

    @property
    def should_stop(self) -> bool:
        """True once the job was asked to stop: save a checkpoint and return soon."""
