"""The job SDK: what a workload sees of stoker while it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

import msgspec

WORKLOAD_MARK = "__stoker_workload__"
PARAMS_MARK = "__stoker_params__"  # the msgspec Struct a workload declares its parameters with
REUSE_MARK = "__stoker_reuse_process__"  # its job process may run the next job of the same workload
F = TypeVar("F", bound=Callable[..., Any])
P = TypeVar("P", bound=msgspec.Struct)


@overload
def workload(fn: F, /) -> F: ...
@overload
def workload(*, params: type[msgspec.Struct] | None = None, reuse_process: bool = False) -> Callable[[F], F]: ...


def workload(fn: F | None = None, /, *, params: type[msgspec.Struct] | None = None,
             reuse_process: bool = False) -> F | Callable[[F], F]:
    """Mark a function as a stoker workload, so that a job may name it as `module:function`.

    `@workload(params=MyParams)` also declares its parameters: a msgspec Struct whose fields have defaults
    and one-line descriptions (`Annotated[float, msgspec.Meta(gt=0, description="…")] = 0.001`). Its worker
    offers the JSON schema of it, `GET /api/v1/workloads` lists it, and a submission whose params it does not
    declare (or whose types do not fit) is refused unless the submission says `strict_params: false`.
    Read them in the workload with `params_of(ctx, MyParams)`.

    `reuse_process=True` says the workload keeps nothing of one job in its process (no module state it
    changes, no threads or helper processes left running, no CUDA): after a job of it completes
    unasked, its worker may run the next job of the same workload in that same process instead of
    forking a new one (no fork, no exit, pages already copied). The cost is isolation between those
    jobs: whatever one job leaves in the interpreter the next one sees. A job that failed, was
    stopped, ran on a GPU or left a thread behind never passes its process on.
    """
    def mark(target: F) -> F:
        if params is not None and not (isinstance(params, type) and issubclass(params, msgspec.Struct)):
            raise TypeError(f"@workload(params=...) takes a msgspec.Struct class, got {params!r}")
        setattr(target, WORKLOAD_MARK, True)
        if reuse_process:
            setattr(target, REUSE_MARK, True)
        if params is not None:
            setattr(target, PARAMS_MARK, params)
        return target
    return mark(fn) if fn is not None else mark


def params_schema(target: Callable[..., Any]) -> dict[str, Any] | None:
    """The JSON schema of the parameters a workload function declares, or None when it declares none."""
    declared = getattr(target, PARAMS_MARK, None)
    return msgspec.json.schema(declared) if declared is not None else None


def params_of(ctx: JobContext, cls: type[P], renamed: dict[str, str] | None = None) -> P:
    """The job's params as the workload's declared Struct: defaults filled in, numbers given as text accepted
    (params submitted with `strict_params: false` are not checked: undeclared keys are dropped here).

    `renamed` maps an old parameter name to its new one, for params of jobs submitted before the rename.
    """
    raw = dict(ctx.params or {})
    for old, new in (renamed or {}).items():
        if old in raw:
            value = raw.pop(old)
            raw.setdefault(new, value)
    declared = set(cls.__struct_fields__)
    return msgspec.convert({k: v for k, v in raw.items() if k in declared}, cls, strict=False)


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
    params_version: int  # 0: a job submitted before workloads declared their parameters (their old names)
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

        Returns once `obj` is written to the worker's disk (as of this call: change it freely afterwards);
        the worker stores it and tells the scheduler while the job goes on. The next save_checkpoint, and the
        job's end, wait for that: a checkpoint that could not be stored raises CheckpointError there (at the
        end, a job that would have completed fails, retryably). UnsupportedCheckpoint (at once) if `obj`
        holds anything but None, bool, int, float, str, bytes, lists, tuples, dicts with str or int keys and
        torch tensors (no pickled objects).
        """

    def load_checkpoint(self) -> Any | None:
        """The newest good checkpoint: this job's own, or for an evaluation the source job's; None if none.

        The worker checked its digest and format before the job started (skipping bad ones); it is
        loaded without unpickling anything, and CheckpointCorrupt is raised should it still not load.
        """

    @property
    def should_stop(self) -> bool:
        """True once the job was asked to stop: save a checkpoint and return soon."""
