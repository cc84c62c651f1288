"""Workloads by name: the `stoker.workloads` entry points, or a user's own `module:function`."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

GROUP = "stoker.workloads"
_TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

Workload = Callable[[Any], Any]


class UnknownWorkload(LookupError):
    """No workload has this name; the message lists the ones this worker knows."""


def registered() -> dict[str, str]:
    """Registered workload names → `module:function`, as installed packages declare them."""
    from importlib import metadata  # slow to import; job processes never need it

    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}


def is_target(name: str) -> bool:
    """Whether a workload name is a `module:function` reference rather than a registered name."""
    return bool(_TARGET_RE.match(name))


def module_of(target: str) -> str:
    """The module part of `module:function`."""
    return target.split(":", 1)[0]


class Registry:
    """Name → target lookups, cached; re-read when a name is missing (a package may have been installed)."""

    def __init__(self) -> None:
        self._known: dict[str, str] | None = None

    def names(self) -> list[str]:
        """Registered workload names, sorted."""
        return sorted(self._table())

    def _table(self, refresh: bool = False) -> dict[str, str]:
        if self._known is None or refresh:
            self._known = registered()
        return self._known

    def target(self, name: str) -> str:
        """The `module:function` a workload name runs; UnknownWorkload when there is none."""
        table = self._table()
        if name not in table:
            table = self._table(refresh=True)
        if name in table:
            return table[name]
        if is_target(name):
            return name
        known = ", ".join(sorted(table)) or "none installed"
        raise UnknownWorkload(f"unknown workload {name!r} (registered: {known}; or give module:function)")

    def is_registered(self, name: str) -> bool:
        """Whether `name` is a registered (installed) workload."""
        return name in self._table()


def load(target: str) -> Workload:
    """Import `module:function` and return the function (import errors propagate, as they should)."""
    if not is_target(target):
        raise UnknownWorkload(f"workload target {target!r} is not module:function")
    module_name, attr = target.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownWorkload(f"module {module_name!r} has no {attr!r} (workload {target!r})") from None
    if not callable(obj):
        raise UnknownWorkload(f"workload {target!r} is not callable")
    return obj


def eval_name(workload: str, known: list[str]) -> str:
    """The workload an evaluation of `workload` runs: `<workload>-eval` when that exists."""
    candidate = f"{workload}-eval"
    return candidate if candidate in known and not workload.endswith("-eval") else workload
