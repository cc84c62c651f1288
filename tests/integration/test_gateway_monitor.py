"""/api/v1/hosts, /api/v1/alerts and the health report's hosts and open alerts, on a real gateway and NATS."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from contracts import events as ev
from contracts.base import utcnow
from contracts.telemetry import DiskFigures, GpuFigures, HostSample
from eventstore.telemetry import first_seq_since, publish_sample
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import gateway_stack


def host_sample(cpu: float) -> HostSample:
    return HostSample(host_id="box", hostname="box.lan", cpu_percent=cpu, memory_percent=61.0, at=utcnow(),
                      disks=(DiskFigures(path="/data", percent=70.0, free_bytes=123, total_bytes=400),),
                      gpus=(GpuFigures(index=0, utilization_percent=99.0, temperature_c=71.0,
                                       memory_used_bytes=1, memory_total_bytes=4),))


async def test_hosts_alerts_and_health_show_what_the_monitors_found(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as stack:
        for cpu in (10.0, 20.0, 30.0):
            await publish_sample(nc, topology, "host", "box", host_sample(cpu))
        await nc.flush()
        now = utcnow()
        raised = [ev.AlertRaised(alert_id=f"a{i}", rule=rule, target_kind="host", target="box", value=90.0,
                                 threshold=80.0, message="cpu_percent 90 > 80", raised_at=now + timedelta(seconds=i))
                  for i, rule in enumerate(("cpu_high", "gpu_hot", "some_rule"))]
        for event in raised:
            await stack.log.append("alert", event.alert_id, [event])
        await stack.log.append("alert", "a1", [ev.AlertResolved(alert_id="a1", resolved_at=now)])
        await stack.projected()
        async with stack.client("viewer") as client:
            async def three_points():
                reply = (await client.get("/api/v1/hosts")).json()
                return reply if reply["items"] and len(reply["items"][0]["history"]) == 3 else None

            hosts = await eventually(three_points, what="three samples of box")
            open_alerts = (await client.get("/api/v1/alerts")).json()["items"]
            every = (await client.get("/api/v1/alerts", params={"all": "true"})).json()["items"]
            bad = await client.get("/api/v1/alerts", params={"limit": 0})
        async with stack.client(None) as anonymous:
            health = (await anonymous.get("/api/v1/health")).json()
            refused = await anonymous.get("/api/v1/hosts")
        assert await first_seq_since(nc, topology, "host", "box", utcnow() + timedelta(hours=1)) is None
        assert await first_seq_since(nc, topology, "host", "nobody", now) is None
    card = hosts["items"][0]
    assert card["summary"]["host_id"] == "box" and card["summary"]["cpu_percent"] == 30.0
    assert card["summary"]["disk_percent"] == 70.0 and card["summary"]["gpus"][0]["memory_percent"] == 25.0
    assert [p["cpu"] for p in card["history"]] == [10.0, 20.0, 30.0] and card["sample"]["hostname"] == "box.lan"
    assert [a["id"] for a in open_alerts] == ["a2", "a0"]  # newest first, a1 resolved
    assert [a["id"] for a in every] == ["a2", "a1", "a0"] and every[1]["status"] == "resolved"
    assert "airflow" in every[1]["advice"] and "[monitor]" in every[0]["advice"]  # a rule without advice of its own
    assert bad.status_code == 400 and refused.status_code == 401
    assert health["status"] in ("healthy", "unhealthy") and {"version", "timestamp", "database", "storage",
                                                           "workers"} <= set(health)
    assert health["open_alerts"] == 2 and [a["id"] for a in health["alerts"]] == ["a2", "a0"]
    assert [h["host_id"] for h in health["hosts"]] == ["box"]
    assert any("2 open alert(s)" in w for w in health["warnings"])


async def test_the_first_sample_since_a_moment_is_found_by_bisection(nc, topology, event_log) -> None:
    for cpu in range(5):
        await publish_sample(nc, topology, "host", "bisect", host_sample(float(cpu)))
    await nc.flush()
    await asyncio.sleep(0.05)  # the server's clock moves on between the two batches
    middle = utcnow()
    await asyncio.sleep(0.05)
    for cpu in range(5, 12):
        await publish_sample(nc, topology, "host", "bisect", host_sample(float(cpu)))
        await publish_sample(nc, topology, "host", "other", host_sample(float(cpu)))
    await nc.flush()
    js = nc.jetstream()
    first = await first_seq_since(nc, topology, "host", "bisect", middle)
    msg = await js.get_msg(topology.telemetry_stream, seq=first, direct=True)
    assert msg.subject == topology.telemetry("host", "bisect") and b'"cpu_percent":5.0' in msg.data
    assert await first_seq_since(nc, topology, "host", "bisect", middle - timedelta(hours=1)) < first


def stoker(*args: str):
    """The real `stoker` CLI in this process (run in a thread: the gateway it asks serves on this loop)."""
    from click.testing import CliRunner

    from ops.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


async def test_stoker_health_prints_the_platform_and_writes_a_report_file(nats_server, nc, topology,
                                                                         tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as stack:
        await publish_sample(nc, topology, "host", "box", host_sample(42.0))
        raised = ev.AlertRaised(alert_id="a9", rule="gpu_hot", target_kind="host", target="box", value=91.0,
                                threshold=85.0, message="gpu_temperature_c 91.0 > 85 for 60s", raised_at=utcnow())
        await stack.log.append("alert", "a9", [raised])
        await stack.projected()
        url = ["--data-dir", str(tmp_path / "cli"), "health", "--url", stack.url]
        shown = await asyncio.to_thread(stoker, *url)
        as_json = await asyncio.to_thread(stoker, *url, "--json")
        written = await asyncio.to_thread(stoker, *url, "report", "--out", str(tmp_path / "reports"))
    down = await asyncio.to_thread(stoker, "--data-dir", str(tmp_path / "cli"), "health", "--url", stack.url)
    report = json.loads(await asyncio.to_thread(Path(written.output.strip()).read_text))
    body = json.loads(as_json.output)
    healthy = body["status"] == "healthy"
    assert shown.exit_code == as_json.exit_code == written.exit_code == (0 if healthy else 1)
    assert "hosts (1):" in shown.output and "box  cpu 42%" in shown.output and "gpu0 99% 71C" in shown.output
    assert "gpu_hot on box: gpu_temperature_c 91.0 > 85" in shown.output
    assert body["open_alerts"] == 1 and body["hosts"][0]["host_id"] == "box"
    assert report["gateway"] == stack.url and report["alerts"][0]["id"] == "a9" and "generated_at" in report
    assert Path(written.output.strip()).name.startswith("stoker-health-")
    assert down.exit_code == 1 and "does not answer" in down.output
