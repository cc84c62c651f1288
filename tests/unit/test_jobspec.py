"""One JobSpec: the flat copies agree with it, and a spec arrives unchanged wherever a job goes.

`JobSubmitted` declares the spec's fields again (msgspec allows one base with fields); the other
carriers inherit them and may only narrow a field (commands and bodies carry policy bounds, events
storage bounds). The round trip runs a spec with no field at its default through the real code: the
command, the decider, the log's codec, the board, the dispatch message, the worker's frame, the read
model and the REST view.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from contracts import events as ev
from contracts.codec import decode_event, decode_message, encode
from contracts.commands import SchedulerCommand, SubmitJob
from contracts.dispatch import Assignment, DispatchMessage
from contracts.jobspec import SPEC_FIELDS, CheckpointRef, JobSpec, spec_fields
from eventstore.readmodels.jobs import fold_job
from eventstore.records import StoredEvent
from gateway.schemas.jobs import JobView, SubmitJobBody
from gateway.views import job_view
from services.scheduler import domain
from services.scheduler.board import apply_in_place
from services.trainer import wire
from tests.unit.test_scheduler_domain import T0, checkpointed, fold, submitted, worker

# Every field away from its default, so a field that gets lost on the way shows. A new JobSpec field
# needs a value here: test_the_sample_sets_every_field says so.
SAMPLE = JobSpec(kind="eval", workload="sample", params={"lr": 0.5, "layers": [2, 3]}, max_iterations=7, episodes=3,
                 checkpoint_of="source", priority=4, gpus=1, labels=("gpu", "fast"), timeout_s=90.0, max_retries=2,
                 map_id=3, map_sha256="ab" * 32,
                 map_filename="level.wad", action_combinations="left+fire", stall_after_s=120.0,
                 on_stall="restart",
                 checkpoint_ref=CheckpointRef(name="source/1-5", sha256="cd" * 32, size=9, iteration=5),
                 params_version=3)
SUBMISSION_ONLY = {"job_id", "idempotency_key", "submitted_at", "traceparent"}  # JobSubmitted's own fields
CARRIERS = (SubmitJob, SubmitJobBody, Assignment, wire.Start, JobView)
INPUTS = (SubmitJob, SubmitJobBody)  # what users send: policy bounds, within the spec's


def fields(cls: type) -> dict[str, mi.Field]:
    return {f.name: f for f in mi.type_info(cls).fields}


def shape(t: mi.Type) -> Any:
    """A type with its bounds left out; lists and tuples alike (both are JSON arrays)."""
    if isinstance(t, mi.Metadata):
        return shape(t.type)
    if isinstance(t, mi.UnionType):
        return frozenset(shape(x) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return ("literal", frozenset(t.values))
    if isinstance(t, mi.DictType):
        return ("object", shape(t.key_type), shape(t.value_type))
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return ("array", shape(t.item_type))
    return type(t).__name__


def within(narrow: mi.Type, wide: mi.Type) -> bool:
    """Whether every value `narrow` accepts, `wide` accepts too (for the types a JobSpec uses)."""
    if isinstance(narrow, mi.Metadata):
        return within(narrow.type, wide)
    if isinstance(wide, mi.Metadata):
        return within(narrow, wide.type)
    if isinstance(wide, mi.UnionType):
        members = narrow.types if isinstance(narrow, mi.UnionType) else (narrow,)
        return all(any(within(m, w) for w in wide.types) for m in members)
    if shape(narrow) != shape(wide):
        return isinstance(wide, mi.AnyType)
    if isinstance(wide, mi.LiteralType):
        return set(narrow.values) <= set(wide.values)
    for bound, tighter in (("ge", max), ("gt", max), ("min_length", max), ("le", min), ("lt", min),
                           ("max_length", min)):
        limit, own = getattr(wide, bound, None), getattr(narrow, bound, None)
        if limit is not None and (own is None or tighter(own, limit) != own):
            return False
    if getattr(wide, "pattern", None) and narrow.pattern != wide.pattern:
        return False
    if isinstance(wide, mi.DictType):
        return within(narrow.key_type, wide.key_type) and within(narrow.value_type, wide.value_type)
    if isinstance(wide, mi.ListType | mi.VarTupleType):
        return within(narrow.item_type, wide.item_type)
    return True


def test_job_submitted_declares_exactly_the_spec_with_the_same_types_bounds_and_defaults() -> None:
    spec, event = fields(JobSpec), fields(ev.JobSubmitted)
    assert set(event) - SUBMISSION_ONLY == set(spec), "JobSubmitted and JobSpec have different job fields"
    for name, field in spec.items():
        # Both hold storage bounds: the board and every carrier decode what the event held.
        assert event[name].type == field.type, f"JobSubmitted.{name}: {event[name].type} != JobSpec's {field.type}"
        assert (event[name].default, event[name].default_factory) == (field.default, field.default_factory), name


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.__name__)
def test_every_carrier_is_a_job_spec_with_compatible_fields(carrier: type) -> None:
    assert issubclass(carrier, JobSpec)
    spec, own = fields(JobSpec), fields(carrier)
    for name in SPEC_FIELDS:
        assert shape(own[name].type) == shape(spec[name].type), f"{carrier.__name__}.{name}"
        if carrier in INPUTS:
            assert within(own[name].type, spec[name].type), f"{carrier.__name__}.{name} is wider than JobSpec's"


@pytest.mark.parametrize("command", INPUTS, ids=lambda c: c.__name__)
def test_a_submission_adds_only_its_idempotency_key_and_strict_params(command: type) -> None:
    # strict_params says how to check the params when the job is submitted; it is no part of the job.
    assert set(command.__struct_fields__) == {*SPEC_FIELDS, "idempotency_key", "strict_params"}


def test_within_tells_narrow_from_wide() -> None:
    small, big = mi.type_info(ev.SmallInt), mi.type_info(int)
    assert within(small, big) and not within(big, small)
    assert not within(mi.type_info(str | None), mi.type_info(ev.Label | None))  # no pattern is wider


def test_the_sample_sets_every_field() -> None:
    for name, field in fields(JobSpec).items():
        default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
        assert getattr(SAMPLE, name) != default, f"give SAMPLE a {name} other than its default"
    assert SAMPLE.kind != fields(SubmitJob)["kind"].default


async def test_a_spec_reaches_the_event_board_assignment_frame_read_model_and_view_unchanged() -> None:
    body = msgspec.json.decode(msgspec.json.encode({**spec_fields(SAMPLE), "idempotency_key": "k"}),
                               type=SubmitJobBody)
    assert body.spec == SAMPLE
    command = decode_message(SchedulerCommand, encode(SubmitJob(**msgspec.structs.asdict(body))))
    assert command.spec == SAMPLE and command.idempotency_key == "k"

    state = fold(submitted("source"), checkpointed("source"), worker(gpus=1, labels=("gpu", "fast")))
    events = domain.decide(command, state, T0, new_job_id=lambda: "j")
    assert [type(e) for e in events] == [ev.JobSubmitted, ev.JobAssigned]
    stored_events = []
    for seq, event in enumerate(events, start=10):
        read = decode_event(type(event).__name__, event.schema, encode(event))  # as the log gives it back
        apply_in_place(state, read)
        stored_events.append(StoredEvent(seq=seq, subject=f"x.job.{read.job_id}", aggregate="job",
                                         aggregate_id=read.job_id, event=read, event_id=str(seq),
                                         schema=read.schema, time=T0, headers={}))
    submitted_event = stored_events[0].event
    assert submitted_event == ev.JobSubmitted.from_spec("j", SAMPLE, submitted_at=T0, idempotency_key="k")
    assert submitted_event.spec == SAMPLE and state.jobs["j"].spec == SAMPLE

    assignment = domain.dispatch_for(state, events[1])
    assert isinstance(assignment, Assignment)
    delivered = decode_message(DispatchMessage, encode(assignment))
    assert delivered.spec == SAMPLE and [c.name for c in delivered.checkpoints] == ["source/1-5"]  # the chosen one

    frame = wire.Start(**spec_fields(delivered), job_id="j", attempt=1, worker_id="w1", target="m:f",
                       spool_dir="/tmp/x")
    assert wire.unpack(wire.pack(frame)[4:]).spec == SAMPLE

    row = await fold_job(stored_events)
    view = job_view(row)
    assert view.spec == SAMPLE and (view.id, view.status, view.idempotency_key) == ("j", "assigned", "k")
