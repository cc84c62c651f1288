"""The sd_notify wire format (eventstore.sdnotify): datagrams, socket names, the watchdog's interval."""

from __future__ import annotations

import pytest

from eventstore.sdnotify import Notifier, message, socket_address, strip, watchdog_interval


def test_fields_become_lines() -> None:
    assert message(READY=1, STATUS="up at http://127.0.0.1:8000") == b"READY=1\nSTATUS=up at http://127.0.0.1:8000\n"


def test_a_value_is_one_line() -> None:
    with pytest.raises(ValueError, match="one line"):
        message(STATUS="two\nlines")


@pytest.mark.parametrize(("name", "address"), [
    ("/run/user/1000/systemd/notify", "/run/user/1000/systemd/notify"),
    ("@/org/freedesktop/systemd1/notify/123", b"\0/org/freedesktop/systemd1/notify/123"),
])
def test_socket_names(name, address) -> None:
    assert socket_address(name) == address


@pytest.mark.parametrize(("env", "pid", "interval"), [
    ({}, 10, None),
    ({"WATCHDOG_USEC": "60000000"}, 10, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "10"}, 10, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "11"}, 10, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "zero"}, 10, None),
    ({"WATCHDOG_USEC": "0"}, 10, None),
])
def test_watchdog_interval_is_half_the_timeout_and_only_for_its_process(env, pid, interval) -> None:
    assert watchdog_interval(env, pid) == interval


def test_without_a_socket_nothing_is_sent_and_nothing_fails() -> None:
    quiet = Notifier(None, 5.0)
    assert not quiet.active and quiet.watchdog_s is None
    assert quiet.ready("up") is False and quiet.watchdog() is False and quiet.start_watchdog() is None


def test_strip_removes_only_the_protocol_variables() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "HOME": "/h"}
    strip(env)
    assert env == {"HOME": "/h"}
