"""A lease whose bucket does not answer for a while (NATS away, or its stream electing a leader after a node
of the cluster was lost): the standby keeps trying instead of failing its service, and takes the lease once
answers come back. A real nats-server, stopped and started again on the same store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventstore.connect import connect
from eventstore.lease import Lease
from eventstore.server import NatsServer, ServerSpec, free_port


async def test_a_standby_waits_out_a_bucket_that_does_not_answer(tmp_path: Path) -> None:
    spec = ServerSpec(store_dir=tmp_path / "js", port=free_port(), http_port=free_port(), name="lease")
    server = await NatsServer(spec).start()
    nc = await connect(server.url, "lease-test")
    again: NatsServer | None = None
    try:
        kv = await nc.jetstream(timeout=1).create_key_value(bucket="leases")
        server.stop()  # nobody answers now
        lease = Lease(kv, "scheduler", "standby", ttl=0.6)
        waiting = asyncio.create_task(lease.wait_acquired())
        await asyncio.sleep(2.5)  # several unanswered tries (each times out after 1 s)
        assert not waiting.done(), waiting  # neither held nor failed: still trying
        again = await NatsServer(spec).start()
        assert await asyncio.wait_for(waiting, 30) is True and lease.held
        await lease.release()
    finally:
        await nc.close()
        server.stop()
        if again is not None:
            again.stop()
