"""Discovery on a real nats-server: registration, heartbeats, silence, departure, takeover."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from contracts import events as ev
from contracts.base import utcnow
from contracts.codec import encode
from contracts.commands import CommandError, DeregisterWorker, RegisterWorker, WorkerAccepted
from contracts.errors import InvalidCommand, NotFound
from eventstore.micro import call
from services.discovery.adapter import DiscoveryService
from services.discovery.settings import DiscoverySettings
from tests.integration.fake_worker import FakeWorker, InProcess, eventually

FAST = DiscoverySettings(heartbeat_s=0.1, lost_after_s=1.0, forget_after_s=1.0, tick_s=0.05, lease_ttl_s=0.6,
                         network_check_s=0)  # the LAN watch has tests of its own (test_lan_phone)


async def worker_events(event_log, worker_id: str) -> list[str]:
    stored, _ = await event_log.load("worker", worker_id)
    return [s.type for s in stored]


def acting(service: DiscoveryService) -> bool:
    return service.discovery is not None and service.serving.is_set()


async def test_a_workers_life_in_the_registry(nats_server, nc, topology, event_log) -> None:
    async with InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery") as service:
        await eventually(lambda: acting(service), what="discovery acting")
        worker = await FakeWorker(nats_server.url, topology, "w1", heartbeat_s=0.1).start()
        try:
            again = await worker.register()
            assert again.worker_id == "w1" and again.status == "healthy" and again.seq > 0
            worker.pause_heartbeats()
            await eventually(lambda: service.discovery.state.workers["w1"].status == "lost", what="w1 lost")
            worker.resume_heartbeats()
            await eventually(lambda: service.discovery.state.workers["w1"].status == "healthy", what="w1 back")
            left = await worker.deregister()
            assert left.status == "left"
            await eventually(lambda: "w1" not in service.discovery.state.workers, what="w1 forgotten")
        finally:
            await worker.close()
    assert await worker_events(event_log, "w1") == [
        "WorkerRegistered", "WorkerRegistered", "WorkerLost", "WorkerReturned", "WorkerDeregistered",
        "WorkerForgotten"]
    stored, _ = await event_log.load("worker", "w1")
    lost = stored[2].event
    assert lost.lost_at - lost.last_seen >= timedelta(seconds=FAST.lost_after_s)


async def test_bad_registrations_are_refused_and_change_nothing(nats_server, nc, topology, event_log) -> None:
    async with InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery") as service:
        await eventually(lambda: acting(service), what="discovery acting")
        subject = topology.command("discovery", "register", "w1")
        bad_bodies = [b"]", b'{"worker_id": "w1", "capabilities": {"hostname": "h", "cpu_cores": 0, "ram_mb": 1}}',
                      b'{"worker_id": "has space", "capabilities": {"hostname": "h", "cpu_cores": 1, "ram_mb": 1}}']
        for body in bad_bodies:
            reply = await nc.request(subject, body, timeout=5)
            error = msgspec.json.decode(reply.data, type=CommandError)
            assert (error.code, error.error) == (400, "invalid"), body
        twins = (ev.Gpu(index=0, name="a", memory_mb=1), ev.Gpu(index=0, name="b", memory_mb=1))
        caps = ev.WorkerCapabilities(hostname="h", cpu_cores=1, ram_mb=1, gpus=twins)
        with pytest.raises(InvalidCommand, match="distinct"):
            await call(nc, topology, RegisterWorker(worker_id="w1", capabilities=caps), WorkerAccepted)
        with pytest.raises(NotFound):
            await call(nc, topology, DeregisterWorker(worker_id="w1"), WorkerAccepted)
        # On w1's subject (the only one w1's NATS user may send to) a registration of w2 is refused.
        other = RegisterWorker(worker_id="w2", capabilities=ev.WorkerCapabilities(hostname="h", cpu_cores=1, ram_mb=1))
        reply = await nc.request(subject, encode(other), timeout=5)
        assert msgspec.json.decode(reply.data, type=CommandError).code == 403
        assert not await event_log.has_events(topology.events("worker", "w2"))
        assert service.discovery.state.workers == {}
    assert await event_log.last_seq() == 0


async def test_a_new_discovery_gives_known_workers_time_to_be_heard(nats_server, nc, topology, event_log) -> None:
    long_ago = utcnow() - timedelta(hours=1)
    caps = ev.WorkerCapabilities(hostname="h", cpu_cores=1, ram_mb=1)
    for worker_id in ("alive", "silent"):
        await event_log.append("worker", worker_id, [ev.WorkerRegistered(worker_id=worker_id, capabilities=caps,
                                                                         registered_at=long_ago)], 0)
    alive = await FakeWorker(nats_server.url, topology, "alive", heartbeat_s=0.1).start(register=False)
    try:
        started = utcnow()
        async with InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery") as service:
            await eventually(lambda: acting(service), what="discovery acting")
            await eventually(lambda: service.discovery.state.workers["silent"].status == "lost", what="silent lost")
            assert service.discovery.state.workers["alive"].status == "healthy"
    finally:
        await alive.close()
    stored, _ = await event_log.load("worker", "silent")
    lost = stored[-1].event
    assert isinstance(lost, ev.WorkerLost)
    assert lost.last_seen >= started, "the silence was counted from before the takeover"
    assert await worker_events(event_log, "alive") == ["WorkerRegistered"]


async def test_only_the_lease_holder_acts_and_a_standby_takes_over(nats_server, nc, topology, event_log) -> None:
    first = InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery-1")
    second = InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery-2", standby=True)
    one, two = await first.__aenter__(), await second.__aenter__()
    try:
        await eventually(lambda: acting(one), what="the first acting")
        assert not two.serving.is_set()
        caps = ev.WorkerCapabilities(hostname="h", cpu_cores=1, ram_mb=1)
        await call(nc, topology, RegisterWorker(worker_id="w1", capabilities=caps), WorkerAccepted)
        await first.shutdown()  # a clean stop hands the lease over at once
        await eventually(lambda: acting(two), what="the standby acting")
        assert two.discovery.state.workers["w1"].status == "healthy"
        await call(nc, topology, DeregisterWorker(worker_id="w1"), WorkerAccepted)
    finally:
        await second.shutdown()
    assert await worker_events(event_log, "w1") == ["WorkerRegistered", "WorkerDeregistered"]
