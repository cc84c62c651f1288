"""Types every part of the API shares: ids, bounded numbers, the error body."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from contracts.base import ID_PATTERN, MAX_SAFE_INT

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=64, description="a job, worker or token id")]
Workload = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
# Request bounds are the contracts' (contracts.base) or tighter: what the API accepts, a command carries.
Iterations = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
Episodes = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
MapId = Annotated[int, msgspec.Meta(ge=1, le=MAX_SAFE_INT, description="a map (asset) id")]
Params = Annotated[dict[str, Any], msgspec.Meta(max_length=200, description="workload hyper-parameters")]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: a misspelt field is an error, not silently ignored."""


class Reply(msgspec.Struct, kw_only=True):
    """Base of response bodies."""


class ErrorBody(Reply, kw_only=True, omit_defaults=True):
    """Every error: the HTTP status and what went wrong (`extra` lists invalid fields)."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None
