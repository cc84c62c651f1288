"""`stoker up` under a Type=notify unit: READY=1 once the gateway's health answers, watchdog pings, STOPPING=1;
only the supervisor speaks (its processes do not inherit NOTIFY_SOCKET)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import start_platform, stop_platform
from tests.notify_listener import NotifyListener


def test_stoker_up_says_ready_when_health_answers_and_only_it_speaks(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    listener = NotifyListener()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.name)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping a second
    try:
        running = start_platform(tmp_path)  # healthy, and its local worker registered
        try:
            ready = listener.wait_for("READY", "1", timeout=60)
            assert ready.pid == running.process.pid
            assert "the gateway's health answers" in ready.fields["STATUS"]
            pings = len([n for n in listener.notices if "WATCHDOG" in n.fields])
            listener.wait_for("WATCHDOG", "1", timeout=30)
            while len([n for n in listener.notices if "WATCHDOG" in n.fields]) < pings + 2:
                assert listener.receive(30) is not None, "the watchdog pings stopped"
        finally:
            stop_platform(running)
        assert listener.wait_for("STOPPING", "1", timeout=30).pid == running.process.pid
        listener.drain()
        # The local worker registered long before: had it inherited the socket, it would have said READY=1 too.
        assert {n.pid for n in listener.notices} == {running.process.pid}
    finally:
        listener.close()
