"""/schema made exact: msgspec's own JSON Schema for every body, public routes and optional bodies marked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.types import Empty

from contracts.events import WorkerCapabilities
from gateway.schemas.common import Body, Reply

REF = "#/components/schemas/{name}"


def struct_types() -> list[type]:
    """Every request and response body type of the API (and the contract types they embed)."""
    found: list[type] = [WorkerCapabilities]
    pending = [Body, Reply]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


def exact_components(spec: Any) -> None:
    """Replace the framework's rendering of each Struct with msgspec's (item patterns, additionalProperties)."""
    schemas = spec.components.schemas
    types = [t for t in struct_types() if t.__name__ in schemas]
    _refs, components = msgspec.json.schema_components(types, ref_template=REF)
    for cls in types:
        # A reply always carries every field it declares (defaults too, unless it omits them): msgspec's
        # schema, written for input, would call a field with a default optional.
        component = components.get(cls.__name__)
        if component is not None and issubclass(cls, Reply) and not cls.__struct_config__.omit_defaults:
            component["required"] = list(component.get("properties", {}))
    for name, component in components.items():
        schemas[name] = component


def _operations(app: Litestar) -> Iterator[tuple[Any, Any]]:
    """(route handler, its OpenAPI operation) for every documented HTTP handler."""
    spec = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in (spec.paths or {}):
            continue
        item = spec.paths[route.path_format]
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if operation is not None:
                    yield handler, operation


def finish_schema(app: Litestar) -> None:
    """Make the served document say exactly what the API does; call once, before serving."""
    exact_components(app.openapi_schema)
    for handler, operation in _operations(app):
        if handler.opt.get("role", "admin") is None:
            operation.security = []  # public: no token needed
        data = handler.parsed_fn_signature.parameters.get("data")
        if data is not None and data.default is not Empty and operation.request_body is not None:
            operation.request_body.required = False
