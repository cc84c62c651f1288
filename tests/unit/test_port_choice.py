"""The port `stoker up` takes when the configured one is taken, as a pure choice (real sockets: tests/integration)."""

from __future__ import annotations

import pytest

from ops.portchoice import PortChoice, choose_port


def never(_port: int) -> int:
    raise AssertionError("no fresh port should be needed")


@pytest.mark.parametrize(("free", "remembered", "expected"), [
    ({8000, 13456}, 13456, PortChoice("gateway", 8000, 8000)),  # configured and free: always that one
    ({13456}, 13456, PortChoice("gateway", 8000, 13456, "nginx (pid 812)")),  # taken: the one chosen last time
    ({13456}, 8000, PortChoice("gateway", 8000, 20001, "nginx (pid 812)")),  # nothing kept that differs
    (set(), 13456, PortChoice("gateway", 8000, 20001, "nginx (pid 812)")),  # the kept one is taken too
    (set(), None, PortChoice("gateway", 8000, 20001, "nginx (pid 812)")),
])
def test_the_configured_port_then_the_kept_one_then_a_fresh_one(free: set, remembered: int | None,
                                                                 expected: PortChoice) -> None:
    fresh = (lambda: 20001) if expected.port == 20001 else (lambda: never(0))
    choice = choose_port("gateway", 8000, free.__contains__, remembered, fresh,
                         lambda p: "nginx (pid 812)" if p == 8000 else None)
    assert choice == expected
    assert choice.moved == (expected.port != 8000)


def test_a_moved_port_says_who_has_the_configured_one() -> None:
    assert PortChoice("gateway", 8000, 13456, "nginx (pid 812)").explain() == (
        "gateway: port 8000 is taken by nginx (pid 812); using 13456 instead")
    assert PortChoice("nats", 4222, 13000).explain() == (
        "nats: port 4222 is taken by another program; using 13000 instead")
    assert PortChoice("nats", 4222, 4222).explain() == "nats: port 4222"
