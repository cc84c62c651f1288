"""Connecting to NATS, with a credential, and with an error that says what to do when it does not work.

Every connection of the product comes through `connect`: with a credential (an nkey seed file, see
eventstore/credentials.py) it signs the server's nonce with the seed and receives its replies under
`_INBOX.<its public key>`, the only inbox its NATS user may subscribe to.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from eventstore.credentials import CredentialError, public_key, read_seed
from eventstore.observability import get_logger
from eventstore.permissions import inbox_prefix

log = get_logger(component="nats")


class NatsUnavailable(ConnectionError):
    """No NATS server answers at the configured address."""


class NatsRefused(NatsUnavailable):
    """The server answers but refuses this connection's credential (none, wrong, or revoked)."""


def credential_options(credentials: str | Path | None) -> dict[str, Any]:
    """nats-py options for a credential file: the seed, and the inbox its user may read."""
    if not credentials:
        return {}
    try:
        seed = read_seed(Path(credentials))
    except CredentialError as exc:
        raise NatsRefused(str(exc)) from None
    return {"nkeys_seed_str": seed, "inbox_prefix": inbox_prefix(public_key(seed))}


async def connect(url: str, name: str, *, credentials: str | Path | None = None, timeout: float = 3.0,
                  reconnect: bool = True, on_closed: Callable[[], None] | None = None) -> Client:
    """Connect to NATS; a long-running service keeps reconnecting, a failed first connect is explained.

    A refused credential is final: at the first connect it is an immediate NatsRefused (no retries), and
    after it (the worker was revoked) the connection is closed rather than retried forever; `on_closed` is
    called when the connection is closed for good.
    """
    nc = Client()
    connected, refused, last, closing = False, asyncio.Event(), [], []

    async def on_error(exc: Exception) -> None:
        # Reconnection is handled by the client; failures surface as NatsUnavailable or timeouts. What the
        # server refused is worth a line: a permissions violation names the subject.
        last[:] = [exc]
        if _refused(exc):
            if not connected:
                refused.set()
            elif not nc.is_closed:
                log.error("NATS refused this connection's credential (revoked?); closing the connection",
                          connection=name, error=str(exc))
                closing.append(asyncio.ensure_future(nc.close()))
        elif "permissions violation" in str(exc).lower():
            log.error("NATS refused an operation of this connection", connection=name, error=str(exc))

    options = credential_options(credentials)
    if on_closed is not None:
        async def closed() -> None:
            on_closed()

        options["closed_cb"] = closed
    servers = [u.strip() for u in url.split(",") if u.strip()]
    # nats-py keeps retrying a first connect that fails; the deadline turns that into an answer.
    attempt = asyncio.ensure_future(nc.connect(
        servers, name=name, connect_timeout=timeout, max_reconnect_attempts=-1 if reconnect else 0,
        allow_reconnect=reconnect, reconnect_time_wait=0.5, error_cb=on_error,
        pending_size=64 * 1024 * 1024, **options))
    refusal = asyncio.ensure_future(refused.wait())
    await asyncio.wait({attempt, refusal}, timeout=timeout * len(servers) + 1.0, return_when=asyncio.FIRST_COMPLETED)
    refusal.cancel()
    if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
        connected = True
        return nc
    attempt.cancel()
    failure = (await asyncio.gather(attempt, return_exceptions=True))[0]
    with contextlib.suppress(Exception):
        await nc.close()
    if refused.is_set() or any(_refused(e) for e in [*last, failure] if isinstance(e, BaseException)):
        raise NatsRefused(refused_message(url, credentials)) from None
    if isinstance(failure, asyncio.CancelledError):
        failure = TimeoutError()
    raise NatsUnavailable(
        f"cannot reach NATS at {url} ({failure.__class__.__name__}: {failure or 'no answer'}); "
        "is `stoker up` running, or is --nats / STOKER_NATS_URL right?"
    ) from None


def _refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text or "user authentication" in text


def refused_message(url: str, credentials: str | Path | None) -> str:
    """One line for a connection the server refused."""
    if credentials:
        return (f"NATS at {url} refused the credential {credentials} (authorization violation): it is not "
                "a user of this platform, or it was revoked")
    return (f"NATS at {url} requires a credential (authorization violation): pass one with --credentials / "
            "STOKER_NATS_CREDENTIALS (on the control plane, `stoker` uses <data dir>/credentials/admin.nk)")
