"""Connecting to NATS, with a credential, and with an error that says what to do when it does not work.

Every connection of the product comes through `connect`: with a credential (an nkey seed file, see
eventstore/credentials.py) it signs the server's nonce with the seed and receives its replies under
`_INBOX.<its public key>`, the only inbox its NATS user may subscribe to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from eventstore.credentials import CredentialError, public_key, read_seed
from eventstore.observability import get_logger
from eventstore.permissions import inbox_prefix
from eventstore.pki import TlsSetupError, client_context, explain_tls_failure

log = get_logger(component="nats")


class NatsUnavailable(ConnectionError):
    """No NATS server answers at the configured address."""


class NatsRefused(NatsUnavailable):
    """The server answers but refuses this connection's credential (none, wrong, or revoked)."""


def credential_options(credentials: str | Path | None, seed: str | None = None) -> dict[str, Any]:
    """nats-py options for a credential (a seed file, or the seed itself): the seed, and the inbox its user
    may read."""
    if not credentials and not seed:
        return {}
    if seed is None:
        try:
            seed = read_seed(Path(credentials))
        except CredentialError as exc:
            raise NatsRefused(str(exc)) from None
    return {"nkeys_seed_str": seed, "inbox_prefix": inbox_prefix(public_key(seed))}


def _not_nats_py_tls_close_noise(record: logging.LogRecord) -> bool:
    # nats-py's transport answers an end of stream with True, which asyncio's TLS layer ignores and reports
    # on every close of a TLS connection; the words mean nothing to a person, so they are left out.
    return "eof_received()" not in record.getMessage()


def tls_options(ca_file: str | None) -> dict[str, Any]:
    """nats-py options for a TLS-only connection pinned to `ca_file` (the TLS handshake comes first)."""
    if not ca_file:
        return {}
    quiet_asyncio = logging.getLogger("asyncio")
    if _not_nats_py_tls_close_noise not in quiet_asyncio.filters:
        quiet_asyncio.addFilter(_not_nats_py_tls_close_noise)
    try:
        return {"tls": client_context(ca_file), "tls_handshake_first": True}
    except TlsSetupError as exc:
        raise NatsUnavailable(str(exc)) from None


async def connect(url: str, name: str, *, credentials: str | Path | None = None, timeout: float = 3.0,
                  reconnect: bool = True, on_closed: Callable[[], None] | None = None,
                  ca_file: str | None = None, seed: str | None = None) -> Client:
    """Connect to NATS; a long-running service keeps reconnecting, a failed first connect is explained.

    `credentials` is an nkey seed file (or `seed` the seed itself). With `ca_file` the connection is TLS
    only, to a server whose certificate that CA signed for the URL's host (the TLS handshake comes first:
    nothing is ever said in plain text).

    A refused credential is final: at the first connect it is an immediate NatsRefused (no retries), and
    after it (the worker was revoked) the connection is closed rather than retried forever; `on_closed` is
    called when the connection is closed for good.
    """
    nc = Client()
    connected, refused, last, closing, told = False, asyncio.Event(), [], [], []

    def closed_for_good() -> None:
        if on_closed is not None and not told:
            told.append(True)
            on_closed()

    async def close_refused() -> None:
        try:
            await nc.close()
        except Exception as exc:
            # nats-py first flushes what is pending, and on a connection the server already cut that raises
            # before its closed callback runs: say it here, or the service would run on without a connection.
            log.debug("closing the refused connection failed", connection=name, error=repr(exc))
        closed_for_good()

    async def on_error(exc: Exception) -> None:
        # Reconnection is handled by the client; failures surface as NatsUnavailable or timeouts. What the
        # server refused is worth a line: a permissions violation names the subject.
        last.append(exc)
        del last[:-16]  # the recent errors explain a failed first connect
        if _refused(exc):
            if not connected:
                refused.set()
            elif not nc.is_closed:
                log.error("NATS refused this connection's credential (revoked?); closing the connection",
                          connection=name, error=str(exc))
                closing.append(asyncio.ensure_future(close_refused()))
        elif "permissions violation" in str(exc).lower():
            log.error("NATS refused an operation of this connection", connection=name, error=str(exc))

    options = credential_options(credentials, seed) | tls_options(ca_file)
    if on_closed is not None:
        async def closed() -> None:
            closed_for_good()

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
    # Closing a connection whose TLS handshake failed can wait forever on the transport: bounded.
    closing_now = asyncio.ensure_future(nc.close())
    closing_now.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is of no interest
    await asyncio.wait({closing_now}, timeout=2.0)
    closing_now.cancel()
    if refused.is_set() or any(_refused(e) for e in [*last, failure] if isinstance(e, BaseException)):
        raise NatsRefused(refused_message(url, credentials)) from None
    if isinstance(failure, asyncio.CancelledError):
        failure = TimeoutError()
    why = next(filter(None, (explain_tls_failure(url, e, ca_file) for e in [failure, *reversed(last)]
                             if isinstance(e, BaseException))), None)
    raise NatsUnavailable(why or (
        f"cannot reach NATS at {url} ({failure.__class__.__name__}: {failure or 'no answer'}); "
        "is `stoker up` running, or is --nats / STOKER_NATS_URL right?"
    )) from None


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
