"""The worker's telemetry: samples go out without waiting, and JetStream acknowledges each one later.

Publishing never waits for the stream (a job's progress must not slow down with it), but every
sample carries a reply subject, so the stream acknowledges it once stored. A runner waits for the
acknowledgement of its attempt's last sample before it reports the attempt's end: whoever sees
`JobCompleted` can then read every sample of the job from the stream. One connection's messages
to one stream are stored in the order they were sent, so the last acknowledgement covers the rest.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

ACK_TIMEOUT_S = 30.0  # an acknowledgement that never comes (a reconnect lost it) stops being waited for then
MAX_PENDING = 2000  # more unacknowledged samples than this: send without asking (nats-py stalls at 4000)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # a sample the stream refused (limits) is dropped, as telemetry may be


class TelemetryPublisher:
    """Publishes samples into the telemetry stream and hands back the future of each acknowledgement."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def publish(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> asyncio.Future | None:
        """Send one sample; the future of its acknowledgement, or None when sent without one."""
        if self.js.publish_async_pending() >= MAX_PENDING:
            await self.nc.publish(subject, data, headers=headers or None)
            return None
        future = await self.js.publish_async(subject, data, headers=headers or None)
        future.add_done_callback(_retrieve)
        asyncio.get_running_loop().call_later(ACK_TIMEOUT_S, future.cancel)  # frees its slot if no ack comes
        return future

    @staticmethod
    async def stored(future: asyncio.Future | None, timeout: float) -> bool:
        """Wait (at most `timeout`) for an acknowledgement; True when the stream stored the sample."""
        if future is None:
            return False
        await asyncio.wait({future}, timeout=timeout)
        return future.done() and not future.cancelled() and future.exception() is None
