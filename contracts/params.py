"""Workload parameters: the JSON schema a workload declares them with, and checking a job's params against it.

A workload declares its parameters as a msgspec Struct (`services.trainer.sdk.workload(params=...)`);
its worker offers `msgspec.json.schema(Struct)` with its registration (`WorkerCapabilities.workload_params`).
The scheduler checks each submission against the offered schema (`check_params`), once, for every way
a job is submitted (REST, CLI, dashboard, a script's SubmitJob). This module is pure and checks the part
of JSON Schema that msgspec writes for a Struct of plain fields: `type`, `enum`, `anyOf`, `$ref` into
`$defs`, numeric bounds, string and array lengths, `items`, and an object's `properties`/`required`.
A keyword it does not know constrains nothing here (the workload's own decoding still applies).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

ParamsSchema = dict[str, Any]  # a JSON schema (an object with `properties`), as msgspec.json.schema writes it
MAX_SCHEMA_BYTES = 64 * 1024  # one workload's schema, encoded: descriptions included, plenty
_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,), "null": (type(None),),
                                       "object": (dict,), "array": (list, tuple)}


def resolve(node: Mapping[str, Any], root: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any]:
    """`node` with a `$ref` into the root's `$defs` followed (bounded: a cycle ends as 'anything')."""
    while "$ref" in node and depth < 32:
        ref = str(node["$ref"])
        name = ref.rsplit("/", 1)[-1] if ref.startswith("#/$defs/") else None
        node = root.get("$defs", {}).get(name, {}) if name else {}
        depth += 1
    return node


def properties(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The parameters a schema declares, by name."""
    return dict(resolve(schema, schema).get("properties", {}))


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(kind, (object,)))


_NUMERIC_BOUNDS = (("minimum", operator.ge, ">="), ("maximum", operator.le, "<="),
                   ("exclusiveMinimum", operator.gt, ">"), ("exclusiveMaximum", operator.lt, "<"))


def _bounds(value: Any, node: Mapping[str, Any]) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        for key, ok, word in _NUMERIC_BOUNDS:
            if key in node and not ok(value, node[key]):
                return f"must be {word} {node[key]}, got {value!r}"
    if isinstance(value, str | list | tuple):
        what = "characters" if isinstance(value, str) else "items"
        if ("minLength" in node and len(value) < node["minLength"]) or ("minItems" in node and len(value) < node[
                "minItems"]):
            return f"too short ({len(value)} {what})"
        if ("maxLength" in node and len(value) > node["maxLength"]) or ("maxItems" in node and len(value) > node[
                "maxItems"]):
            return f"too long ({len(value)} {what})"
    return None


def check_value(value: Any, node: Mapping[str, Any], root: Mapping[str, Any], depth: int = 0) -> str | None:
    """Why `value` does not fit the schema `node`, or None when it does."""
    node = resolve(node, root)
    if depth > 16:
        return None
    if "anyOf" in node:
        whys = [check_value(value, option, root, depth + 1) for option in node["anyOf"]]
        return None if any(w is None for w in whys) else next(w for w in whys if w)
    if "enum" in node and value not in node["enum"]:
        return f"must be one of {', '.join(map(repr, node['enum']))}, got {value!r}"
    kinds = node.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_ok(value, k) for k in kinds):
            return f"must be {' or '.join(_article(k) for k in kinds)}, got {_json_type(value)} {value!r}"
    if (why := _bounds(value, node)) is not None:
        return why
    if isinstance(value, list | tuple) and "items" in node:
        for i, item in enumerate(value):
            if (why := check_value(item, node["items"], root, depth + 1)) is not None:
                return f"item {i}: {why}"
    return None


def check_params(params: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem of `params` against a workload's schema: unknown names, ill-typed values, missing ones."""
    declared = properties(schema)
    problems = []
    for name, value in params.items():
        if name not in declared:
            problems.append(f"unknown parameter {name!r}")
        elif (why := check_value(value, declared[name], schema)) is not None:
            problems.append(f"parameter {name!r} {why}")
    for name in resolve(schema, schema).get("required", ()):
        if name not in params:
            problems.append(f"parameter {name!r} is required")
    return problems


def params_problem(workload: str, problems: Sequence[str], schema: Mapping[str, Any]) -> str:
    """The one-line refusal: what is wrong, the parameters the workload knows, and how to send them anyway."""
    known = ", ".join(sorted(properties(schema))) or "none"
    return (f"workload {workload!r}: {'; '.join(problems)} (known parameters: {known}); "
            "send \"strict_params\": false to pass them unchecked")


def schema_size(schema: Mapping[str, Any]) -> int:
    """A schema's encoded size in bytes."""
    return len(msgspec.json.encode(schema))


def _article(kind: str) -> str:
    return {"integer": "an integer", "array": "an array", "object": "an object", "null": "null"}.get(kind, f"a {kind}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return {str: "string", dict: "object", list: "array", tuple: "array"}.get(type(value), type(value).__name__)


def param_rows(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The declared parameters flat, in declaration order: name, type, default, description and bounds."""
    rows = []
    for name, node in properties(schema).items():
        node = resolve(node, schema)
        options = [resolve(o, schema) for o in node.get("anyOf", ())] or [node]
        types = [o["type"] for o in options if isinstance(o.get("type"), str)]
        first = next((o for o in options if o.get("type") != "null"), node)
        row: dict[str, Any] = {"name": name, "type": " | ".join(types) or ("enum" if "enum" in first else "any"),
                               "default": node.get("default"), "description": node.get("description", ""),
                               "nullable": "null" in types}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum"):
            if key in first:
                row[key] = first[key]
        rows.append(row)
    return rows
