"""Workload names, and which names a worker offers (docs/protocol.md, "Which worker runs what").

A workload is named either by a registered name (an entry point in the group `stoker.workloads`
of a package installed on the worker, e.g. `2048`) or by a `module:function` target that the
worker imports. An evaluation job of `X` runs `X-eval` where the worker has it, else `X`: the
worker resolves that name, so a machine without workloads (the gateway's) never has to.

A worker advertises `workloads` (its registered names) and `target_modules`: the packages it runs
`module:function` targets from (None: any package installed there; empty: no targets).

A `module:function` target from Python's standard library is never a workload (`builtins:print`,
`os:system`): it is refused when submitted and by every worker. A worker also runs a target only if
its function is marked as a workload (`services.trainer.sdk.workload`); a registered name needs no mark.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Iterable

TARGET_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
MODULE_PATTERN = r"^[A-Za-z_][\w.]*$"
EVAL_SUFFIX = "-eval"
_TARGET_RE = re.compile(TARGET_PATTERN)
NOT_WORKLOADS = frozenset(sys.stdlib_module_names) | {"__main__"}


def is_target(name: str) -> bool:
    """Whether a workload name is a `module:function` reference rather than a registered name."""
    return bool(_TARGET_RE.match(name))


def refused_target(target: str) -> str | None:
    """Why a `module:function` target can never be a workload (it is the standard library's), or None."""
    package = target.split(":", 1)[0].split(".", 1)[0]
    if package not in NOT_WORKLOADS:
        return None
    return (f"{target!r} is not a workload: {package!r} is Python's standard library; a job names a registered "
            "workload, or module:function of a function marked @workload in a package installed on the worker")


def eval_name(workload: str, known: Iterable[str]) -> str:
    """The workload an evaluation of `workload` runs among the names `known`: `<workload>-eval` when there."""
    candidate = workload + EVAL_SUFFIX
    return candidate if not workload.endswith(EVAL_SUFFIX) and candidate in set(known) else workload


def runs_target(target_modules: Iterable[str] | None, target: str) -> bool:
    """Whether `module:function` comes from a package in `target_modules` (None: from anywhere)."""
    if target_modules is None:
        return True
    module = target.split(":", 1)[0]
    return any(module == package or module.startswith(package + ".") for package in target_modules)


def offers(workloads: Collection[str] | None, target_modules: Iterable[str] | None, workload: str,
           kind: str) -> bool:
    """Whether a worker advertising these can run a job of `workload`, `kind` (workloads None: it did not say)."""
    if workloads is None:
        return True  # a worker from before workloads were advertised: it may run anything, as then
    if is_target(workload):
        return runs_target(target_modules, workload)
    return workload in workloads or (kind == "eval" and workload + EVAL_SUFFIX in workloads)
