"""Health (public), the admin event feed, and token management (admin)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter

from contracts.base import MAX_SAFE_INT, utcnow
from contracts.errors import NotFound
from gateway import health
from gateway.auth import ADMIN, PUBLIC, VIEWER
from gateway.controllers.common import GW, errors
from gateway.schemas.system import EventPage, Health, TokenCreate, TokenCreated, TokenList, TokenView
from gateway.tokens import TokenRecord, issue_token, revoke_token
from gateway.views import event_view


def token_view(record: TokenRecord) -> TokenView:
    """A token without its secret."""
    return TokenView(token_id=record.token_id, role=record.role, name=record.name, issued_at=record.issued_at,
                     expires_at=record.expires_at, revoked_at=record.revoked_at, active=record.active(utcnow()))


class SystemController(Controller):
    """The platform itself."""

    path = "/"
    tags = ["system"]

    @get("/health", opt=PUBLIC,
         responses={503: ResponseSpec(Health, description="something is down", generate_examples=False)})
    async def health(self, gw: GW) -> Response[Health]:
        """NATS, streams, services (`$SRV.PING`), projection lag and the store; 503 unless all are fine."""
        report = await health.check(gw)
        return Response(report, status_code=200 if report.state == "ok" else 503)

    @get("/events", opt=ADMIN, responses=errors(400))
    async def events(self, gw: GW, since: Annotated[int, Parameter(ge=0, le=MAX_SAFE_INT)] = 0,
                     limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> EventPage:
        """Events after sequence `since`, oldest first."""
        last = await gw.log.last_seq()
        end = min(last, since + limit)
        records = []
        async for msg in gw.log.read_raw(since + 1, until_seq=end):
            stored = gw.log.decode(msg)
            if stored is not None:
                records.append(event_view(stored))
        return EventPage(events=records, next_since=max(since, end), last_seq=last)


class TokensController(Controller):
    """API tokens: issued and revoked as events."""

    path = "/tokens"
    tags = ["tokens"]

    @post("/", opt=ADMIN, status_code=201, responses=errors(400))
    async def create(self, gw: GW, data: JSONBody[TokenCreate]) -> TokenCreated:
        """Issue a token; its secret is in this reply only."""
        expires = timedelta(seconds=data.expires_in_s) if data.expires_in_s else None
        event, secret = await issue_token(gw.log, data.role, data.name, expires)
        gw.registry.apply(event)  # usable at once, before the follower sees the event
        return TokenCreated(token_id=event.token_id, token=secret, role=event.role, name=event.name,
                            expires_at=event.expires_at)

    @get("/me", opt=VIEWER, responses=errors())
    async def me(self, request: Request) -> TokenView:
        """The caller's own token: its role, name and expiry (any role may ask)."""
        return token_view(request.scope["state"]["token"])

    @get("/", opt=ADMIN, responses=errors())
    async def list_tokens(self, gw: GW) -> TokenList:
        """Every token ever issued, without secrets."""
        return TokenList(items=[token_view(r) for r in gw.registry.records()])

    @post("/{token_id:str}/revoke", opt=ADMIN, status_code=200, responses=errors(404))
    async def revoke(self, gw: GW, token_id: FromPath[str]) -> TokenView:
        """Revoke a token; sockets using it are closed."""
        if token_id not in gw.registry.by_id:
            raise NotFound(f"no token {token_id}")
        event = await revoke_token(gw.log, token_id)
        if event is not None:
            gw.registry.apply(event)  # effective at once, before the follower sees the event
        return token_view(gw.registry.by_id[token_id])
