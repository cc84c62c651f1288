"""What every controller shares: the gateway dependency and the documented error responses."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from contracts.errors import InvalidCommand
from gateway.core import Gateway
from gateway.schemas.common import ErrorBody

GW = NamedDependency[Gateway]  # the `gw` parameter of every handler
DESCRIPTIONS = {
    400: "the request is malformed or makes no sense", 401: "no token, or an unknown, expired or revoked one",
    403: "the token's role may not do this", 404: "no such resource", 409: "conflicts with the current state",
    413: "the body is larger than allowed",
    429: "too many bad tokens from this address", 503: "a service or the read model is unavailable",
    504: "a service got the command and did not answer in time (the detail names the command and the wait)",
}
SERVICE = (503, 504)  # a route that sends a command to a service: none may be there, or it may not answer


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error responses a route may give (401, 403 and 429 always)."""
    wanted = sorted({401, 403, 429, *codes})
    return {code: ResponseSpec(ErrorBody, description=DESCRIPTIONS[code], generate_examples=False) for code in wanted}


def provide_gateway(state: State) -> Gateway:
    """The dependency every handler takes as `gw`."""
    return state.gateway


async def require_json_bools(request: Request[Any, Any, Any], *names: str) -> None:
    """400 unless each of these body fields, where given, is a JSON true or false.

    Litestar converts a decoded body to its Struct leniently (0, 1, "true", "0" all become booleans); a
    switch such as `strict_params` should mean only what it says.
    """
    try:
        raw = msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        return  # the body's own decoding reports that
    for name in names:
        if isinstance(raw, dict) and name in raw and not isinstance(raw[name], bool):
            raise InvalidCommand(f"{name} must be true or false, got {raw[name]!r}")
