"""An in-memory JobContext for running workloads in tests: it records everything they report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def roundtrip(obj: Any) -> Any:
    """Write and read back as the platform does (its formats and rules), so a checkpoint shares nothing with the job."""
    from services.trainer.checkpoint_format import read_checkpoint, write_checkpoint

    with tempfile.TemporaryDirectory() as spool:
        path = Path(spool) / "ckpt"
        fmt, _digest, _size = write_checkpoint(obj, path)
        return read_checkpoint(path, fmt)


@dataclass
class RecordingContext:
    """Implements `services.trainer.sdk.JobContext`; `stop_after_reports` makes `should_stop` turn True."""

    workload: str = "test"
    kind: str = "train"
    params: dict[str, Any] = field(default_factory=dict)
    params_version: int = 1
    max_iterations: int | None = None
    episodes: int | None = None
    device: str = "cpu"
    asset_path: Path | None = None
    assets: dict[str, Path] = field(default_factory=dict)
    job_id: str = "job-test"
    attempt: int = 1
    stop_after_reports: int | None = None
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    episode_reports: list[dict[str, Any]] = field(default_factory=list)
    stop_requested: bool = False

    def report(self, iteration: int, loss: float | None = None, **metrics: float) -> None:
        """Record a progress sample."""
        self.reports.append({"iteration": iteration, "loss": loss, **metrics})

    def report_episode(self, episode: int, *, score: float, log: list[dict[str, Any]] | None = None,
                       **figures: float) -> None:
        """Record a finished evaluation episode."""
        self.episode_reports.append({"episode": episode, "score": score, "log": log, **figures})

    def save_checkpoint(self, obj: Any, iteration: int) -> None:
        """Keep a serialised-and-restored copy of the checkpoint."""
        self.checkpoints.append((iteration, roundtrip(obj)))

    def load_checkpoint(self) -> Any | None:
        """The newest checkpoint, or None."""
        return roundtrip(self.checkpoints[-1][1]) if self.checkpoints else None

    @property
    def should_stop(self) -> bool:
        """True once asked to stop, or once `stop_after_reports` reports were made."""
        limit = self.stop_after_reports
        return self.stop_requested or (limit is not None and len(self.reports) >= limit)

    def next_attempt(self, **changes: Any) -> RecordingContext:
        """A context for the job's next attempt: same job and checkpoints, fresh reports, no stop."""
        return RecordingContext(
            workload=self.workload, kind=self.kind, params=dict(self.params), params_version=self.params_version,
            max_iterations=self.max_iterations, episodes=self.episodes, device=self.device,
            job_id=self.job_id, attempt=self.attempt + 1, checkpoints=list(self.checkpoints), **changes,
        )
