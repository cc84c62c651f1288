"""Connecting to NATS with an error that says what to do when nobody answers."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.client import Client


class NatsUnavailable(ConnectionError):
    """No NATS server answers at the configured address."""


async def connect(url: str, name: str, *, timeout: float = 3.0, reconnect: bool = True) -> Client:
    """Connect to NATS; a long-running service keeps reconnecting, a failed first connect is explained."""
    async def quiet(_exc: Exception) -> None:
        # Reconnection is handled by the client; failures surface as NatsUnavailable or timeouts.
        return None

    servers = [u.strip() for u in url.split(",") if u.strip()]
    try:
        # nats-py keeps retrying a first connect that fails; the deadline turns that into an answer.
        return await asyncio.wait_for(nats.connect(
            servers, name=name, connect_timeout=timeout, max_reconnect_attempts=-1 if reconnect else 0,
            allow_reconnect=reconnect, reconnect_time_wait=0.5, error_cb=quiet,
            pending_size=64 * 1024 * 1024,
        ), timeout * len(servers) + 1.0)
    except (OSError, TimeoutError, nats.errors.NoServersError, nats.errors.Error) as exc:
        raise NatsUnavailable(
            f"cannot reach NATS at {url} ({exc.__class__.__name__}: {exc or 'no answer'}); "
            "is `stoker up` running, or is --nats / STOKER_NATS_URL right?"
        ) from None
