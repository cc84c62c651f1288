"""`JobSpec`: what a job is (what to run, with what, under which constraints), declared once.

Every message that describes a job carries these fields, flat. Those that can inherit them do:
`SubmitJob` (contracts/commands.py), `Assignment` (contracts/dispatch.py), the worker's `Start` frame
(services/trainer/wire.py) and the REST API's `SubmitJobBody` and `JobView` (gateway/schemas/jobs.py)
are each their own kind of Struct (command, dispatch message, frame, body) *and* a JobSpec, so a field
added here reaches them all. msgspec allows only one base with fields, so `JobSubmitted` (whose base
`JobEvent` has `job_id`) declares the same fields again, flat as the log has always stored them;
tests/unit/test_jobspec.py fails when the two drift apart. The scheduler's board keeps `job.spec`.

The bounds here are storage bounds (what the event and the read model keep). A command or a request body
may narrow a field to a policy bound by declaring it again (SubmitJob's `Priority`, `GpuCount`, …), never
widen it: a policy can then change without making old events unreadable.

`x.spec` is the plain JobSpec of anything that carries one (a subclass's own fields dropped).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from contracts.base import Id, Message, NonNegative, Positive, SmallInt, SmallNonNegative

JobKind = Literal["train", "eval"]
# The action set a workload plays with, in the workload's own notation (the earlier API's `action_combinations`).
ActionCombinations = Annotated[str, msgspec.Meta(max_length=4096)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
AssetFilename = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
Label = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
StallSeconds = Annotated[float, msgspec.Meta(gt=0)]
OnStall = Literal["alert", "restart"]
# -- chosen checkpoints and parameter naming (workloads that declare their parameters) --
# Which names the job's `params` use: 0 for jobs submitted before workloads declared their parameters
# (2048 then read `lr`, and `batch_size` as its parallel boards); 1 for the names the workload declares.
PARAMS_VERSION = 1


class CheckpointRef(Message, kw_only=True):
    """A stored checkpoint: object name, digest, size and the iteration it was taken at."""

    name: str
    sha256: str
    size: NonNegative
    iteration: NonNegative


class JobSpec(Message, kw_only=True):
    """A training or evaluation run as it was asked for; it never changes once submitted."""

    kind: JobKind
    workload: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]  # a registered name or module:function
    params: dict[str, Any] = {}
    max_iterations: Positive | None = None
    episodes: Positive | None = None
    checkpoint_of: Id | None = None  # an evaluation: the job whose newest checkpoint it evaluates
    priority: SmallInt = 0
    gpus: SmallNonNegative = 0
    labels: tuple[Label, ...] = ()  # it runs only on workers with all of these labels
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: SmallNonNegative = 0
    map_id: Positive | None = None  # the map (asset) the run uses
    # The map's content as it was when the job was submitted (the gateway fills these in from `map_id`):
    # the worker fetches it from the maps bucket, checks the digest and hands the job `ctx.asset_path`.
    map_sha256: Sha256 | None = None
    map_filename: AssetFilename | None = None
    action_combinations: ActionCombinations | None = None
    # Stalled training (the monitor): no progress for `stall_after_s` (None: `[monitor] stall_after_s`) raises
    # JobStalled; with `on_stall = "restart"` the job is also restarted from its last checkpoint when it is
    # still stalled one more `stall_after_s` later.
    stall_after_s: StallSeconds | None = None
    on_stall: OnStall = "alert"
    # An evaluation of one chosen checkpoint of `checkpoint_of`'s job (by name): the worker gets only this one.
    checkpoint_ref: CheckpointRef | None = None
    params_version: SmallNonNegative = 0  # see PARAMS_VERSION; a submission says PARAMS_VERSION

    @property
    def spec(self) -> JobSpec:
        """This job's spec alone: a plain JobSpec, whatever carries it."""
        return self if type(self) is JobSpec else spec_of(self)


SPEC_FIELDS: tuple[str, ...] = JobSpec.__struct_fields__


def spec_of(source: Any) -> JobSpec:
    """The JobSpec of any object with the spec's fields as attributes (an event, a command, a view)."""
    return JobSpec(**{name: getattr(source, name) for name in SPEC_FIELDS})


def spec_fields(spec: JobSpec) -> dict[str, Any]:
    """A spec's fields by name, to build a message that carries them: `Assignment(**spec_fields(s), …)`."""
    return {name: getattr(spec, name) for name in SPEC_FIELDS}
