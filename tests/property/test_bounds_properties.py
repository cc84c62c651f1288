"""Every integer the contracts carry is bounded so that SQLite, PostgreSQL and a browser's JSON can hold it."""

from __future__ import annotations

import inspect

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import commands, dispatch, events, telemetry
from contracts.base import MAX_SAFE_INT, Message, NonNegative, Positive, SmallNonNegative, SmallPositive
from gateway.schemas import jobs, runs, system, workers
from gateway.schemas.common import Body

CONTRACT_MODULES = (commands, dispatch, events, telemetry)


def structs(*modules) -> list[type[msgspec.Struct]]:
    """Every Struct class defined in these modules."""
    return [cls for module in modules for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, msgspec.Struct) and cls.__module__ == module.__name__]


def int_fields(info: mi.Type, path: str, seen: set[type]) -> list[tuple[str, mi.IntType]]:
    """(path, IntType) of every integer reachable from a type."""
    if isinstance(info, mi.IntType):
        return [(path, info)]
    if isinstance(info, mi.StructType):
        if info.cls in seen:
            return []
        seen.add(info.cls)
        return [hit for f in info.fields for hit in int_fields(f.type, f"{path}.{f.name}", seen)]
    if isinstance(info, mi.UnionType):
        return [hit for t in info.types for hit in int_fields(t, path, seen)]
    if isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return int_fields(info.item_type, f"{path}[]", seen)
    if isinstance(info, mi.TupleType):
        return [hit for t in info.item_types for hit in int_fields(t, f"{path}[]", seen)]
    if isinstance(info, mi.DictType):
        return int_fields(info.key_type, f"{path}{{}}", seen) + int_fields(info.value_type, f"{path}{{}}", seen)
    return []


def _all_ints(classes) -> list[tuple[str, mi.IntType]]:
    return [hit for cls in classes for hit in int_fields(mi.type_info(cls), cls.__name__, set())]


@pytest.mark.parametrize(("path", "info"), _all_ints(structs(*CONTRACT_MODULES)), ids=lambda v: str(v)[:60])
def test_every_contract_integer_is_bounded(path: str, info: mi.IntType) -> None:
    low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else None)
    high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else None)
    assert low is not None and high is not None, f"{path} has no bounds"
    assert -MAX_SAFE_INT <= low <= high <= MAX_SAFE_INT, path


REQUEST_BODIES = [cls for cls in structs(jobs, runs, system, workers) if issubclass(cls, Body)]


@pytest.mark.parametrize(("path", "info"), _all_ints(REQUEST_BODIES), ids=lambda v: str(v)[:60])
def test_every_request_integer_is_bounded(path: str, info: mi.IntType) -> None:
    assert info.ge is not None and info.le is not None and -MAX_SAFE_INT <= info.ge <= info.le <= MAX_SAFE_INT, path


class Carrier(Message, kw_only=True):
    nonneg: NonNegative = 0
    pos: Positive = 1
    small: SmallNonNegative = 0
    small_pos: SmallPositive = 1


BOUNDS = {"nonneg": (0, MAX_SAFE_INT), "pos": (1, MAX_SAFE_INT), "small": (0, 2**31 - 1), "small_pos": (1, 2**31 - 1)}


@given(st.sampled_from(sorted(BOUNDS)), st.data())
def test_an_integer_within_bounds_round_trips(field: str, data) -> None:
    low, high = BOUNDS[field]
    value = data.draw(st.integers(low, high))
    decoded = msgspec.json.decode(msgspec.json.encode({field: value}), type=Carrier)
    assert getattr(decoded, field) == value


@given(st.sampled_from(sorted(BOUNDS)), st.booleans(), st.integers(min_value=1))
def test_an_integer_beyond_bounds_is_rejected_naming_the_field(field: str, above: bool, distance: int) -> None:
    low, high = BOUNDS[field]
    value = high + distance if above else low - distance
    with pytest.raises(msgspec.ValidationError, match=f"at `\\$.{field}`"):
        msgspec.json.decode(msgspec.json.encode({field: value}), type=Carrier)
