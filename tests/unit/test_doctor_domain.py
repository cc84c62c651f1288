"""`stoker doctor`'s pure decisions: facts → severity, evidence and fix; checks → exit code and report."""

from __future__ import annotations

import pytest

from ops import doctor_domain as dd
from ops import doctor_rules as rules


def check(severity: str, name: str = "x") -> dd.Check:
    return dd.Check(id=name, severity=severity, evidence="")


@pytest.mark.parametrize(("severities", "code"), [
    ([], 0), (["ok", "skipped"], 0), (["ok", "warning"], 1), (["warning", "failure", "ok"], 2)])
def test_exit_code_is_the_worst_severity(severities: list[str], code: int) -> None:
    assert dd.exit_code([check(s) for s in severities]) == code


def test_report_counts_and_keeps_the_order() -> None:
    report = dd.report([check("ok", "python"), check("failure", "nats")])
    assert report["version"] == dd.REPORT_VERSION and report["exit_code"] == 2
    assert report["counts"] == {"ok": 1, "skipped": 0, "warning": 0, "failure": 1}
    assert [c["id"] for c in report["checks"]] == ["python", "nats"]
    assert set(report["checks"][0]) == {"id", "severity", "evidence", "fix", "fixed"}


def test_select_orders_the_named_checks_and_refuses_unknown_ones() -> None:
    assert dd.select(["nats", "python"]) == ["python", "nats"]
    assert dd.select([], deps_only=True) == list(dd.DEPS) == ["python", "packages", "nats-server", "gpu"]
    assert dd.select([]) == list(dd.CHECKS)
    with pytest.raises(dd.UnknownCheck, match="unknown check natz"):
        dd.select(["natz"])


def test_packages_against_their_ranges_and_extras_in_use() -> None:
    requirements = ["click>=8.1", "msgspec>=0.19,<1", "torch<3,>=2.3; extra == 'trainer'",
                    "pytest>=8; extra == 'dev'", "ruff; extra == 'dev'"]
    fine = {"click": "8.1.7", "msgspec": "0.19.0", "torch": "2.4.0", "pytest": None, "ruff": "0.6.0"}
    assert dd.packages_check(requirements, fine).severity == "ok"  # dev is not fully installed: not checked
    old = dd.packages_check(requirements, {**fine, "torch": "1.13.0", "click": None})
    assert old.severity == "failure"
    assert "torch 1.13.0 does not satisfy <3,>=2.3" in old.evidence and "click is not installed" in old.evidence


def test_python_version_against_requires_python() -> None:
    assert dd.python_check("3.11.7", ">=3.11").severity == "ok"
    assert dd.python_check("3.10.2", ">=3.11").severity == "failure"


def facts(**changes: object) -> rules.DataDirFacts:
    base = {"path": "/d", "exists": True, "mode": 0o700, "owner_uid": 1000, "my_uid": 1000,
            "free_bytes": 50 * 1024**3}
    return rules.DataDirFacts(**{**base, **changes})


@pytest.mark.parametrize(("changes", "severity", "fix"), [
    ({}, "ok", ""),
    ({"exists": False}, "warning", "mkdir -m 700 -p /d"),
    ({"mode": 0o755}, "warning", "chmod 700 /d"),
    ({"owner_uid": 0}, "failure", "sudo chown -R 1000 /d"),
    ({"free_bytes": 10 * 1024**2}, "failure", "free space"),
    ({"free_bytes": 500 * 1024**2}, "warning", "free space"),
    ({"writable": False, "write_error": "No space left on device", "free_bytes": 0}, "failure", "free space"),
])
def test_data_dir(changes: dict, severity: str, fix: str) -> None:
    result = rules.data_dir_check(facts(**changes))
    assert result.severity == severity and fix in result.fix, result


def port(**changes: object) -> rules.PortFacts:
    return rules.PortFacts(**{"name": "gateway", "host": "127.0.0.1", "port": 8000, "free": True, **changes})


def test_ports() -> None:
    assert rules.ports_check([port(), port(name="nats", free=False, ours=True)], running=True).severity == "ok"
    taken = rules.ports_check([port(free=False, owner="pid 42 (python3)")], running=False)
    assert taken.severity == "failure" and taken.fix.startswith("kill 42")
    moved = rules.ports_check([port(name="nats", free=False, owner="pid 7 (nats-server)", movable=True)], running=False)
    assert moved.severity == "warning" and moved.fix.startswith("none needed")


@pytest.mark.parametrize(("skew", "severity"), [(None, "skipped"), (0.01, "ok"), (-2.0, "warning"), (45.0, "failure")])
def test_clock(skew: float | None, severity: str) -> None:
    assert rules.clock_check(skew, "test").severity == severity


@pytest.mark.parametrize(("torch", "nvml", "severity"), [
    (None, None, "skipped"), ([], None, "ok"), (["A100"], ["A100"], "ok"), ([], ["A100"], "failure"),
    (None, ["A100"], "warning")])
def test_gpus_seen_by_torch_and_nvml_must_agree(torch: list | None, nvml: list | None, severity: str) -> None:
    assert dd.gpu_check(torch, nvml).severity == severity


def unit(**changes: object) -> rules.ServiceFacts:
    return rules.ServiceFacts(**{"manager": "systemd --user", "unit": "stoker.service", "load_state": "loaded",
                              "unit_file_state": "enabled", "active_state": "active", "sub_state": "running",
                              **changes})


@pytest.mark.parametrize(("changes", "severity", "fix"), [
    ({}, "ok", ""),
    ({"load_state": "not-found"}, "skipped", "stoker service install"),
    ({"active_state": "inactive", "sub_state": "dead"}, "warning", "systemctl --user start stoker.service"),
    ({"unit_file_state": "disabled"}, "warning", "systemctl --user enable stoker.service"),
    ({"active_state": "activating", "sub_state": "auto-restart", "restarts": 5}, "failure", "journalctl --user"),
])
def test_service(changes: dict, severity: str, fix: str) -> None:
    result = rules.service_check([unit(**changes)])
    assert result.severity == severity and fix in result.fix, result


def test_linger_matters_only_for_a_user_unit() -> None:
    assert rules.linger_check("ann", False, user_unit=True).fix == "loginctl enable-linger ann"
    assert rules.linger_check("ann", False, user_unit=False).severity == "skipped"
    assert rules.linger_check("ann", True, user_unit=True).severity == "ok"


def test_nats() -> None:
    base = rules.NatsFacts(url="nats://h:1", identity="admin.nk")
    assert rules.nats_check(rules.NatsFacts(**{**_fields(base), "events": 3})).severity == "ok"
    assert rules.nats_check(rules.NatsFacts(**{**_fields(base), "error": "no answer"})).fix == "stoker up"
    refused = rules.nats_check(rules.NatsFacts(**{**_fields(base), "error": "refused", "refused": True}))
    assert refused.severity == "failure" and "--credentials" in refused.fix
    assert rules.nats_check(base).fix.startswith("stoker up")  # connected, but no event log there


def _fields(facts: rules.NatsFacts) -> dict:
    import msgspec

    return msgspec.structs.asdict(facts)


def test_a_joined_worker_that_is_refused_joins_again() -> None:
    base = {"url": "tls://cp:4222", "identity": "worker w1", "tls": "ca.pem"}
    assert rules.registration_check("w1", rules.NatsFacts(**base)).severity == "ok"
    refused = rules.registration_check("w1", rules.NatsFacts(**base, error="authorization violation", refused=True))
    assert refused.severity == "failure" and refused.fix.startswith("stoker worker --join")
    away = rules.registration_check("w1", rules.NatsFacts(**base, error="no answer"))
    assert away.severity == "failure" and "reaches tls://cp:4222" in away.fix
