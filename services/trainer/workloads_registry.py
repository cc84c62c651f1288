"""Workloads by name: the `stoker.workloads` entry points, or a user's own `module:function`.

Which `module:function` targets a worker runs (docs/protocol.md, "Which worker runs what"): never one
from the standard library; only from packages its `target_modules` setting allows (default: any
package installed on it; `[]`: none, registered names only), both decided before anything is
imported; and only a function marked `@workload`, checked in the job's process once its module is
imported (a module that is not installed fails the job there with its import error). A registered
name needs no mark: its package declared it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from contracts.errors import UnknownWorkload
from contracts.workloads import eval_name, is_target, refused_target, runs_target
from services.trainer.sdk import WORKLOAD_MARK

__all__ = ["GROUP", "Registry", "UnknownWorkload", "eval_name", "is_target", "load", "module_of", "registered"]
GROUP = "stoker.workloads"

Workload = Callable[[Any], Any]


def registered() -> dict[str, str]:
    """Registered workload names → `module:function`, as installed packages declare them."""
    from importlib import metadata  # slow to import; job processes never need it

    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}


def module_of(target: str) -> str:
    """The module part of `module:function`."""
    return target.split(":", 1)[0]


class Registry:
    """Name → target lookups, cached; re-read when a name is missing (a package may have been installed).

    `target_modules`: the packages `module:function` names may come from (None: any; empty: none).
    """

    def __init__(self, target_modules: tuple[str, ...] | None = None) -> None:
        self.target_modules = target_modules
        self._known: dict[str, str] | None = None

    def names(self) -> list[str]:
        """Registered workload names, sorted."""
        return sorted(self._table())

    def _table(self, refresh: bool = False) -> dict[str, str]:
        if self._known is None or refresh:
            self._known = registered()
        return self._known

    def resolve(self, name: str, kind: str) -> str:
        """The workload a job of `name` runs: an evaluation of `X` runs `X-eval` where installed, else `X`."""
        if kind != "eval":
            return name
        table = self._table()
        if name not in table and eval_name(name, table) == name:
            table = self._table(refresh=True)
        return eval_name(name, table)

    def target(self, name: str) -> str:
        """The `module:function` a workload name runs; UnknownWorkload when there is none."""
        table = self._table()
        if name not in table:
            table = self._table(refresh=True)
        if name in table:
            return table[name]
        if is_target(name):
            why = refused_target(name) or self._not_allowed(name)
            if why is not None:
                raise UnknownWorkload(why)
            return name
        known = ", ".join(sorted(table)) or "none installed"
        targets = "; or give module:function" if self.target_modules != () else ""
        raise UnknownWorkload(f"unknown workload {name!r} (registered: {known}{targets})")

    def _not_allowed(self, target: str) -> str | None:
        """Why this worker's `target_modules` setting rules a target out, or None."""
        if runs_target(self.target_modules, target):
            return None
        if not self.target_modules:
            return f"this worker does not run {target!r}: it runs registered workloads only (target_modules = [])"
        return (f"this worker does not run {target!r}: its target_modules setting allows module:function "
                f"targets from {', '.join(self.target_modules)}")

    def is_registered(self, name: str) -> bool:
        """Whether `name` is a registered (installed) workload."""
        return name in self._table()


def load(target: str, registered: bool = False) -> Workload:
    """Import `module:function` and return the function (import errors propagate, as they should).

    A target that is not a registered workload's must be marked `@workload`.
    """
    if not is_target(target):
        raise UnknownWorkload(f"workload target {target!r} is not module:function")
    if (why := refused_target(target)) is not None:  # the agent refused it already; never import one here either
        raise UnknownWorkload(why)
    module_name, attr = target.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownWorkload(f"module {module_name!r} has no {attr!r} (workload {target!r})") from None
    if not callable(obj):
        raise UnknownWorkload(f"workload {target!r} is not callable")
    if not registered and getattr(obj, WORKLOAD_MARK, None) is not True:
        raise UnknownWorkload(f"{target!r} is not a workload: mark it with @workload (from services.trainer.sdk "
                              "import workload) or register it as a stoker.workloads entry point")
    return obj
