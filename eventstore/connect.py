"""Connecting to NATS with an error that says what to do when nobody answers."""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client

from eventstore.pki import TlsSetupError, client_context, explain_tls_failure


class NatsUnavailable(ConnectionError):
    """No NATS server answers at the configured address."""


def _not_nats_py_tls_close_noise(record: logging.LogRecord) -> bool:
    # nats-py's transport answers an end of stream with True, which asyncio's TLS layer ignores and reports
    # on every close of a TLS connection; the words mean nothing to a person, so they are left out.
    return "eof_received()" not in record.getMessage()


async def connect(url: str, name: str, *, timeout: float = 3.0, reconnect: bool = True,
                  ca_file: str | None = None, seed: str | None = None) -> Client:
    """Connect to NATS; a long-running service keeps reconnecting, a failed first connect is explained.

    With `ca_file` the connection is TLS only, to a server whose certificate that CA signed for the URL's host
    (the TLS handshake comes first: nothing is ever said in plain text). `seed`: a NATS user nkey seed to sign in.
    """
    errors: list[Exception] = []

    async def quiet(exc: Exception) -> None:
        # Reconnection is handled by the client; failures surface as NatsUnavailable or timeouts.
        errors.append(exc)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    tls: dict = {"nkeys_seed_str": seed} if seed else {}
    if ca_file:
        quiet_asyncio = logging.getLogger("asyncio")
        if _not_nats_py_tls_close_noise not in quiet_asyncio.filters:
            quiet_asyncio.addFilter(_not_nats_py_tls_close_noise)
        try:
            tls |= {"tls": client_context(ca_file), "tls_handshake_first": True}
        except TlsSetupError as exc:
            raise NatsUnavailable(str(exc)) from None
    try:
        # nats-py keeps retrying a first connect that fails; the deadline turns that into an answer.
        return await asyncio.wait_for(nats.connect(
            servers, name=name, connect_timeout=timeout, max_reconnect_attempts=-1 if reconnect else 0,
            allow_reconnect=reconnect, reconnect_time_wait=0.5, error_cb=quiet,
            pending_size=64 * 1024 * 1024, **tls,
        ), timeout * len(servers) + 1.0)
    except (OSError, TimeoutError, nats.errors.NoServersError, nats.errors.Error) as exc:
        why = next(filter(None, (explain_tls_failure(url, e, ca_file) for e in [exc, *reversed(errors)])), None)
        raise NatsUnavailable(why or (
            f"cannot reach NATS at {url} ({exc.__class__.__name__}: {exc or 'no answer'}); "
            "is `stoker up` running, or is --nats / STOKER_NATS_URL right?"
        )) from None
