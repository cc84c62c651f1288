"""`python -m services.firewall` records what it planned in the event log, as the platform's admin (once)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from contracts import events as ev
from contracts.subjects import Topology
from eventstore.log import JetStreamLog
from tests.secured import start_secured

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = Topology("tfw")


async def test_a_plan_with_changes_is_recorded_as_firewall_planned(tmp_path: Path) -> None:
    secured = await start_secured(tmp_path, TOPOLOGY, workers=())
    try:
        admin = await secured.probe("admin")
        log = JetStreamLog(admin.nc, TOPOLOGY)
        await log.ensure_streams()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.update(PYTHONPATH=str(ROOT), STOKER_DATA_DIR=str(tmp_path), STOKER_PREFIX=TOPOLOGY.prefix)
        # ufw's state cannot be read here (not installed, or not as this user's rules): everything is to add.
        for _ in range(2):  # the same plan twice: recorded once
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.firewall", "plan", "--backend", "ufw", "--host-id", "h1",
                "--listen", "gateway=0.0.0.0:8000", "--listen", "nats=127.0.0.1:4222", "--source", "10.9.0.0/24",
                env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err.decode()
            assert "not recorded" not in err.decode(), err.decode()
        events, _version = await log.load("firewall", "h1")
        [planned] = [e.event for e in events]
        assert isinstance(planned, ev.FirewallPlanned) and planned.backend == "ufw" and not planned.by_hand
        assert planned.rules == (ev.FirewallRule(name="gateway", port=8000, protocol="tcp", source="10.9.0.0/24"),)
        assert planned.commands == ("ufw allow from 10.9.0.0/24 to any port 8000 proto tcp comment 'stoker gateway'",)
        assert "ufw allow from 10.9.0.0/24" in out.decode()
    finally:
        await secured.close()
        secured.server.stop()
