"""A scheduler takeover seen through the gateway: real leader and standby processes, the leader SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

from contracts import events as ev
from contracts.base import utcnow
from contracts.codec import decode_message, encode
from contracts.commands import SubmitJob
from eventstore.streams import ensure_kv
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import assert_error, gateway_stack
from tests.integration.schedulers import start_schedulers
from tests.scheduler_on_memory import MemoryScheduler

ROOT = Path(__file__).resolve().parents[2]
LANES, PER_LANE, KILL_AFTER = 4, 25, 30


async def lease_holder(kv) -> str | None:
    """Who holds the scheduler's lease now (None: nobody yet)."""
    try:
        entry = await kv.get("scheduler")
    except Exception:
        return None
    return entry.value.decode() if entry and entry.value else None


async def submitted_keys(stack) -> Counter:
    """How many JobSubmitted each idempotency key has in the log (None: keyless)."""
    keys: Counter = Counter()
    async for msg in stack.log.read_raw(1, filter_subject=stack.topology.events("job")):
        stored = stack.log.decode(msg)
        if stored is not None and isinstance(stored.event, ev.JobSubmitted):
            keys[stored.event.idempotency_key] += 1
    return keys


async def test_submissions_during_a_scheduler_takeover_all_succeed(nats_server, nc, topology, tmp_path) -> None:
    procs = await start_schedulers(nats_server.url, topology.prefix, tmp_path)
    try:
        async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False,
                                 command_timeout_s=10) as stack:
            leases = await ensure_kv(nc.jetstream(), topology.lease_bucket)
            await eventually(lambda: lease_holder(leases), timeout=30, what="a scheduler holding the lease")
            done, statuses, killed = [0], [], asyncio.Event()

            async def lane(number: int, client) -> None:
                for i in range(PER_LANE):
                    body = {"workload": "noop", "idempotency_key": f"takeover-{number}-{i}"}
                    response = await client.post("/api/v1/jobs", json=body)
                    statuses.append((response.status_code, response.text[:200]))
                    done[0] += 1

            async def kill_the_leader(client) -> int:
                await eventually(lambda: done[0] >= KILL_AFTER, timeout=60, what=f"{KILL_AFTER} submissions")
                holder = await lease_holder(leases)
                leader = next(p for p in procs if f"-{p.pid}-" in holder)
                leader.send_signal(signal.SIGKILL)
                await leader.wait()
                killed.set()
                # Sent while nobody leads (the lease has a second to run out): "no responders" at first.
                return (await client.post("/api/v1/jobs", json={"workload": "noop"})).status_code

            async with stack.client("operator") as client, asyncio.timeout(90):
                *_lanes, keyless = await asyncio.gather(*(lane(n, client) for n in range(LANES)),
                                                        kill_the_leader(client))
            assert killed.is_set()
            assert keyless == 201
            failed = [s for s in statuses if s[0] not in (200, 201)]  # 200: a resend the new leader recognised
            assert not failed, failed
            assert len(statuses) == LANES * PER_LANE
            keys = await submitted_keys(stack)
            assert len(keys) == LANES * PER_LANE + 1 and set(keys.values()) == {1}, keys.most_common(3)
            assert (await lease_holder(leases)) is not None
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 20)


async def test_an_unanswered_submission_is_sent_again_only_when_it_has_a_key(nats_server, nc, topology,
                                                                            tmp_path) -> None:
    # The real scheduler's handlers behind a transport that drops each command's first copy: a leader
    # killed mid-command. Later copies reach the handlers, which decide and append as the leader does.
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, command_timeout_s=3) as stack, \
            MemoryScheduler(log=stack.log, now=utcnow(), deterministic_ids=False) as leader:
        copies: Counter = Counter()

        async def swallow_the_first(msg) -> None:
            command = decode_message(SubmitJob, msg.data)
            copies[command.idempotency_key] += 1
            if copies[command.idempotency_key] > 1:
                await msg.respond(encode(await leader.scheduler.submit(command)))

        subscription = await nc.subscribe(topology.command("scheduler", "submit"), cb=swallow_the_first)
        try:
            async with stack.client("operator") as client:
                keyed = await client.post("/api/v1/jobs", json={"workload": "noop", "idempotency_key": "k1"})
                keyless = await client.post("/api/v1/jobs", json={"workload": "noop"})
        finally:
            await subscription.unsubscribe()
        assert keyed.status_code == 201, keyed.text
        assert copies["k1"] == 2
        assert_error(keyless, 504, "SubmitJob", "within 3 s", "may or may not", "idempotency_key")
        assert copies[None] == 1  # never repeated: it might have been queued
