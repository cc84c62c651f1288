"""Who may call what: bearer tokens, roles per route, and a brake on repeated bad tokens (never on good ones)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from typing import Any, NoReturn

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

from gateway.tokens import TokenRecord, TokenRegistry, role_allows

VIEWER = {"role": "viewer"}
OPERATOR = {"role": "operator"}
ADMIN = {"role": "admin"}
PUBLIC = {"role": None}
MAX_TRACKED = 10_000


class FailureLimiter:
    """Counts bad tokens per address in a sliding window; past the limit the address must wait."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float | None = None) -> float:
        """Seconds the address must wait before it may try again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        failures = self._failures.get(address)
        if not failures:
            return 0.0
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if len(failures) < self.max_failures:
            return 0.0
        return failures[len(failures) - self.max_failures] + self.window_s - now

    def fail(self, address: str, now: float | None = None) -> None:
        """Record one bad token from `address`."""
        now = time.monotonic() if now is None else now
        failures = self._failures.setdefault(address, deque())
        self._failures.move_to_end(address)
        failures.append(now)
        while len(failures) > self.max_failures * 2:
            failures.popleft()
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class Authenticator:
    """Checks tokens against the registry, with the failure brake; used by REST guards and the socket."""

    def __init__(self, registry: TokenRegistry, limiter: FailureLimiter) -> None:
        self.registry = registry
        self.limiter = limiter

    def check(self, token: str | None, address: str, needed: str) -> TokenRecord:
        """The token's record, or raise 401 (missing/bad), 403 (role too low) or 429 (too many bad tokens).

        A valid token is always accepted: the brake only answers the failures of an address that failed
        too often, so a local process guessing tokens (every local client is 127.0.0.1) cannot lock the
        dashboard or the CLI out. Guessing is hopeless anyway (256-bit secrets); the brake keeps a
        scanner's failures cheap and tells it to go away.
        """
        record = self.registry.authenticate(token) if token else None
        if record is None:
            self._refuse(token, address)
        if not role_allows(record.role, needed):
            raise PermissionDeniedException(detail=f"this needs the {needed} role; the token is {record.role}")
        return record

    def _refuse(self, token: str | None, address: str) -> NoReturn:
        if not token:  # not a guess: nothing to brake
            raise NotAuthorizedException(detail="a token is required: Authorization: Bearer <token>",
                                         headers={"WWW-Authenticate": "Bearer"})
        wait = self.limiter.retry_after(address)
        if wait > 0:
            raise TooManyRequestsException(
                detail=f"too many bad tokens from {address}; try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))})
        self.limiter.fail(address)
        raise NotAuthorizedException(detail="the token is unknown, expired or revoked",
                                     headers={"WWW-Authenticate": "Bearer"})


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer's address (what the failure brake counts by)."""
    return connection.client.host if connection.client else "unknown"


async def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: the route's `opt["role"]` decides who may call it (None: anyone)."""
    needed = handler.opt.get("role", "admin")
    if needed is None or connection.scope.get("method") == "OPTIONS":
        return  # OPTIONS: CORS preflights and `Allow` carry no token and reveal nothing
    authenticator: Authenticator = connection.app.state.gateway.auth
    record = authenticator.check(bearer(connection.headers.get("authorization")), client_address(connection),
                                 needed)
    connection.scope.setdefault("state", {})["token"] = record
