"""/ws: authenticate, subscribe to topics, resume from cursors, live messages, pings, slow clients closed."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import HTTPException, WebSocketDisconnect

from contracts.base import utcnow
from gateway.auth import PUBLIC, bearer, client_address
from gateway.hub import Subscriber
from gateway.live import NETWORK, RUNS, STREAMS, control, topic_role, valid_topic
from gateway.replay import replay, truncated_streams
from gateway.tokens import TokenRecord, role_allows

BAD_MESSAGE, UNAUTHORIZED, FORBIDDEN, AUTH_TIMEOUT, TOO_MANY = 4400, 4401, 4403, 4408, 4429
MAX_TOPICS = 200
EXPIRY_SLACK_S = 0.01  # the loop's clock and the wall clock `expires_at` is on may differ by a hair
Cursor = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class Auth(msgspec.Struct, tag="auth", forbid_unknown_fields=True):
    """First message of a browser (which cannot set headers): the token."""

    token: Annotated[str, msgspec.Meta(max_length=512)]


class Subscribe(msgspec.Struct, tag="subscribe", forbid_unknown_fields=True):
    """Add topics; `resume` (first subscribe only) replays what was missed after these cursors."""

    topics: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_TOPICS)]
    resume: dict[Literal["events", "telemetry"], Cursor] | None = None


class Unsubscribe(msgspec.Struct, tag="unsubscribe", forbid_unknown_fields=True):
    """Drop topics."""

    topics: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_TOPICS)]


class Ping(msgspec.Struct, tag="ping"):
    """The client checks the server is there; answered with `pong`."""


class Pong(msgspec.Struct, tag="pong"):
    """Answer to the server's ping (optional)."""


ClientMessage = Auth | Subscribe | Unsubscribe | Ping | Pong
_decoder = msgspec.json.Decoder(ClientMessage)


class Session:
    """One authenticated socket: reader, writer and pinger around a hub subscriber."""

    def __init__(self, gateway: Any, socket: WebSocket, record: TokenRecord, runs_by_default: bool = False) -> None:
        self.gw = gateway
        self.socket = socket
        self.record = record
        self.sub = Subscriber(gateway.settings.gateway.ws_queue_size, record.token_id)
        # A socket authenticated before its first message (header, `?token=`) gets `runs` until it
        # subscribes to what it wants: a plain frontend that sends nothing hears its runs.
        self.runs_by_default = runs_by_default

    async def run(self) -> None:
        """Serve until the client leaves, misbehaves, is too slow, or the token stops working."""
        hub, settings = self.gw.hub, self.gw.settings.gateway
        hub.join(self.sub)
        if self.runs_by_default:
            hub.subscribe(self.sub, [RUNS])
        if not self.record.active(utcnow()):  # revoked between the check and the join: the hub could not see it
            self.sub.close(UNAUTHORIZED, "the token expired or was revoked")
        self.sub.say(control("welcome", role=self.record.role, token_id=self.record.token_id,
                             positions=dict(hub.positions), ping_s=settings.ws_ping_s,
                             queue_size=settings.ws_queue_size))
        work = [self._read(), self._write(), self._ping(), self.sub.closing.wait()]
        if self.record.expires_at is not None:
            work.append(self._expire(self.record.expires_at))
        tasks = [asyncio.create_task(w) for w in work]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hub.leave(self.sub)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.sub.closing.is_set():
            await close(self.socket, self.sub.close_code, self.sub.close_reason)

    async def _read(self) -> None:
        while True:
            try:
                text = await self.socket.receive_text()
            except WebSocketDisconnect:
                return
            try:
                message = _decoder.decode(text)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.sub.say(control("error", code=400, detail=f"bad message: {exc}"))
                continue
            await self._handle(message)

    async def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, Subscribe):
            await self._subscribe(message)
        elif isinstance(message, Unsubscribe):
            self.gw.hub.unsubscribe(self.sub, message.topics)
            self.sub.say(control("unsubscribed", topics=message.topics))
        elif isinstance(message, Ping):
            self.sub.say(control("pong", time=utcnow()))
        elif isinstance(message, Auth):
            self.sub.say(control("error", code=400, detail="already authenticated"))

    async def _subscribe(self, message: Subscribe) -> None:
        bad = [t for t in message.topics if not valid_topic(t)]
        if bad:
            self.sub.say(control("error", code=400, detail=f"unknown topics: {', '.join(bad[:5])}; "
                                 "use job:<id>, jobs, workers, progress, runs, network or events"))
            return
        if self.runs_by_default:  # the client speaks the topic protocol: it gets what it asks for
            self.runs_by_default = False
            self.gw.hub.unsubscribe(self.sub, [RUNS])
        for topic in message.topics:
            if not role_allows(self.record.role, topic_role(topic)):
                self.sub.close(FORBIDDEN, f"topic {topic} needs the {topic_role(topic)} role")
                return
        if message.resume is not None and self.sub.topics:
            self.sub.say(control("error", code=400, detail="resume only in the first subscribe of a connection"))
            return
        if len(self.sub.topics | set(message.topics)) > MAX_TOPICS:
            self.sub.say(control("error", code=400, detail=f"at most {MAX_TOPICS} topics per connection"))
            return
        await self._start(message.topics, dict(message.resume or {}))

    async def _start(self, topics: list[str], cursors: dict[str, int]) -> None:
        hub, sub = self.gw.hub, self.sub
        # From here on live messages are held back; the replay covers everything up to `targets`.
        sub.held = [] if cursors else None
        targets = dict(hub.positions)
        hub.subscribe(sub, topics)
        for stream, cursor in cursors.items():
            sub.sent[stream] = max(sub.sent[stream], cursor)
        replayed, gone = 0, []
        if cursors:
            gone = await truncated_streams(self.gw.log, cursors)
            replayed = await replay(self.gw.log, sub, cursors, targets,
                                    lambda subject: hub.assignments.believes(self.gw.log.topology, subject))
            sub.release_held()
        sub.say(control("subscribed", topics=sorted(sub.topics), replayed=replayed, truncated=gone,
                        positions={s: max(hub.positions[s], sub.sent[s]) for s in STREAMS}))
        if NETWORK in topics:
            hub.push_network(sub)  # the current link now; a new one whenever the address changes

    async def _write(self) -> None:
        queue, send = self.sub.queue, self.socket.send
        while True:
            # The ASGI event directly: this runs once per message per client, the fan-out's hot path.
            await send({"type": "websocket.send", "text": await queue.get(), "bytes": None})

    async def _expire(self, expires_at: datetime) -> None:
        """Close the socket the moment its token expires (a revocation closes it through the hub)."""
        await asyncio.sleep(max((expires_at - utcnow()).total_seconds(), 0) + EXPIRY_SLACK_S)
        self.sub.close(UNAUTHORIZED, "the token expired")

    async def _ping(self) -> None:
        period = self.gw.settings.gateway.ws_ping_s
        while True:
            await asyncio.sleep(period)
            if not self.record.active(utcnow()):
                self.sub.close(UNAUTHORIZED, "the token expired or was revoked")
                return
            self.sub.say(control("ping", time=utcnow()))


async def close(socket: WebSocket, code: int, reason: str) -> None:
    """Close the socket; a client that stopped reading cannot hold the gateway up."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(socket.close(code=code, reason=reason[:120]), 2.0)


async def authenticate(gateway: Any, socket: WebSocket) -> tuple[TokenRecord | None, bool]:
    """The token from the Authorization header, the `token` query parameter (what a browser frontend can
    set), or the first message; and whether it came before any message. Closes the socket on failure."""
    token = bearer(socket.headers.get("authorization")) or socket.query_params.get("token") or None
    early = token is not None
    if token is None:
        try:
            text = await asyncio.wait_for(socket.receive_text(), gateway.settings.gateway.ws_auth_timeout_s)
        except TimeoutError:
            await close(socket, AUTH_TIMEOUT, "send {\"type\": \"auth\", \"token\": …} first")
            return None, False
        except WebSocketDisconnect:
            return None, False
        try:
            token = msgspec.json.decode(text, type=Auth).token
        except (msgspec.DecodeError, msgspec.ValidationError):
            await close(socket, UNAUTHORIZED, "the first message must be {\"type\": \"auth\", \"token\": …}")
            return None, False
    try:
        return gateway.auth.check(token, client_address(socket), "viewer"), early
    except HTTPException as exc:
        await close(socket, 4000 + exc.status_code, str(exc.detail))
        return None, False


@websocket("/ws", opt=PUBLIC)
async def live_socket(socket: WebSocket) -> None:
    """Live events and telemetry by topic; see docs/websocket.md."""
    gateway = socket.app.state.gateway
    await socket.accept()
    record, early = await authenticate(gateway, socket)
    if record is not None:
        await Session(gateway, socket, record, runs_by_default=early).run()
