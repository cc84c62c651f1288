"""Declared workload parameters: the schema check (contracts/params.py), the SDK's reading of them, and 2048's names."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from contracts.params import check_params, param_rows, params_problem, properties
from services.trainer.sdk import params_of, params_schema, workload
from services.trainer.workloads.game2048 import train
from services.trainer.workloads.game2048.params import EvalParams, TrainParams
from tests.workload_context import RecordingContext


class Demo(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A workload's parameters with every kind of field msgspec writes a schema for."""

    rate: Annotated[float, msgspec.Meta(gt=0, le=1, description="a rate")] = 0.5
    count: Annotated[int, msgspec.Meta(ge=1, description="a count")] = 3
    name: Annotated[str, msgspec.Meta(max_length=4)] = "ab"
    mode: Annotated[str, msgspec.Meta(pattern="^x")] | None = None
    fast: bool = False
    layers: list[int] = []
    kind: str | None = None


SCHEMA = msgspec.json.schema(Demo)


@pytest.mark.parametrize(("params", "problems"), [
    ({}, []),
    ({"rate": 1, "count": 2.0, "fast": True, "layers": [1, 2], "kind": None, "name": "abcd"}, []),
    ({"rate": 0}, ["parameter 'rate' must be > 0, got 0"]),
    ({"rate": 1.5}, ["parameter 'rate' must be <= 1, got 1.5"]),
    ({"rate": "0.1"}, ["parameter 'rate' must be a number, got string '0.1'"]),
    ({"count": True}, ["parameter 'count' must be an integer, got boolean True"]),
    ({"count": 2.5}, ["parameter 'count' must be an integer, got number 2.5"]),
    ({"fast": 1}, ["parameter 'fast' must be a boolean, got number 1"]),
    ({"layers": [1, "x"]}, ["parameter 'layers' item 1: must be an integer, got string 'x'"]),
    ({"name": "abcde"}, ["parameter 'name' too long (5 characters)"]),
    ({"kind": 3}, ["parameter 'kind' must be a string, got number 3"]),
    ({"speed": 1, "rate": 0.1}, ["unknown parameter 'speed'"]),
])
def test_check_params_names_each_problem(params: dict, problems: list[str]) -> None:
    assert check_params(params, SCHEMA) == problems


def test_a_required_parameter_and_the_refusal_line() -> None:
    class Needs(msgspec.Struct, kw_only=True):
        path: str

    schema = msgspec.json.schema(Needs)
    assert check_params({}, schema) == ["parameter 'path' is required"]
    line = params_problem("w", ["unknown parameter 'x'"], SCHEMA)
    assert line.startswith("workload 'w': unknown parameter 'x' (known parameters: count, fast, kind, layers, mode")
    assert "strict_params" in line


def test_param_rows_flatten_the_schema_in_declaration_order() -> None:
    rows = param_rows(SCHEMA)
    assert [r["name"] for r in rows] == list(Demo.__struct_fields__)
    assert rows[0] == {"name": "rate", "type": "number", "default": 0.5, "description": "a rate", "nullable": False,
                       "exclusiveMinimum": 0, "maximum": 1}
    assert rows[3]["type"] == "string | null" and rows[3]["nullable"] is True


def test_the_workload_mark_declares_the_schema_and_the_bare_mark_still_works() -> None:
    @workload(params=Demo)
    def declared(ctx):
        return {}

    @workload
    def bare(ctx):
        return {}

    assert params_schema(declared) == SCHEMA and params_schema(bare) is None
    with pytest.raises(TypeError, match=r"msgspec\.Struct"):
        workload(params=dict)(bare)


def test_params_of_fills_defaults_accepts_numbers_as_text_and_drops_undeclared_keys() -> None:
    ctx = RecordingContext(params={"rate": "0.25", "count": 7, "stray": 1})  # strict_params false let these in
    assert params_of(ctx, Demo) == Demo(rate=0.25, count=7)


def test_2048_declares_the_specs_names_with_descriptions() -> None:
    declared = properties(msgspec.json.schema(TrainParams))
    assert {"learning_rate", "gamma", "batch_size", "boards"} <= declared.keys() and "lr" not in declared
    assert all(node.get("description") for node in declared.values())
    assert all(node.get("description") for node in properties(msgspec.json.schema(EvalParams)).values())


def test_2048_reads_new_names_and_old_jobs_keep_their_old_meaning() -> None:
    new = train.configs(train.job_params(RecordingContext(params={"learning_rate": 0.01, "batch_size": 32,
                                                                  "boards": 8})))
    assert (new[0].lr, new[0].minibatch, new[1].batch_size) == (0.01, 32, 8)
    # A job submitted before the rename: `lr`, `batch_size` = its parallel boards, `minibatch`.
    old_ctx = RecordingContext(params={"lr": "0.02", "batch_size": 16, "minibatch": 64}, params_version=0)
    agent, run = train.configs(train.job_params(old_ctx))
    assert (agent.lr, run.batch_size, agent.minibatch) == (0.02, 16, 64)
    assert train.configs(train.job_params(RecordingContext(params={"batch_size": 16}, params_version=0)))[0] \
        .minibatch == TrainParams().batch_size  # its old batch_size never becomes the minibatch


def test_events_from_before_declared_parameters_decode_with_the_defaults() -> None:
    import json
    from pathlib import Path

    from contracts.codec import decode_event

    golden = Path(__file__).parent / "golden"
    submitted = json.loads((golden / "JobSubmitted.v2.json").read_text())
    for key in ("checkpoint_ref", "params_version"):
        submitted.pop(key)
    event = decode_event("JobSubmitted", 2, json.dumps(submitted).encode())
    assert event.checkpoint_ref is None and event.params_version == 0  # an old job: old parameter names
    registered = json.loads((golden / "WorkerRegistered.v1.json").read_text())
    registered["capabilities"].pop("workload_params")
    assert decode_event("WorkerRegistered", 1, json.dumps(registered).encode()).capabilities.workload_params is None
