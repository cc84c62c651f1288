"""Commands over nats.micro: typed endpoints on the service side, typed calls on the client side."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind

from contracts.base import Command
from contracts.codec import decode_message, encode
from contracts.commands import CommandError
from contracts.errors import DomainError, Forbidden, Unavailable, error_for
from contracts.subjects import Topology
from eventstore.observability import consumer_span, get_logger, inject_trace, span
from eventstore.permissions import subject_matches

log = get_logger(component="micro")
R = TypeVar("R")
Handler = Callable[[Any], Awaitable[msgspec.Struct]]


class NoResponders(Unavailable):
    """Nobody listens on the command's subject: the request reached no one, so sending it again is safe."""


class NoAnswer(Unavailable):
    """The service got the command but did not answer in time: it may or may not have been carried out."""


def error_reply(code: int, error: str, message: str) -> tuple[bytes, dict[str, str]]:
    """The body and micro error headers of an error reply."""
    body = encode(CommandError(code=code, error=error, message=message))
    return body, {"Nats-Service-Error": message[:200], "Nats-Service-Error-Code": str(code)}


def command_subject(topology: Topology, command: Command) -> str:
    """Where a command is sent: its service's endpoint, and for a worker's own command its worker id after it."""
    field = command.speaker_field()
    return topology.command(command.service, command.verb, getattr(command, field) if field else None)


def from_worker(command_type: Any) -> bool:
    """Whether an endpoint's command type (a Command class, or a union of them) is sent by a credential for one
    thing it holds (a worker for itself, a join token's claim): its subject ends in that thing's id."""
    members = get_args(command_type) if get_origin(command_type) is Union or isinstance(command_type, UnionType) \
        else (command_type,)
    return any(getattr(member, "speaker_field", lambda: "")() for member in members)


def speaker_mismatch(subject: str, command: Any) -> str | None:
    """Why a worker's command may not be carried out: it came on another worker's subject (else None)."""
    field = getattr(command, "speaker_field", lambda: "")()
    if not field:
        return None
    said, meant = subject.rsplit(".", 1)[-1], getattr(command, field)
    if said != meant:
        who = "worker" if field == "worker_id" else field.removesuffix("_id").replace("_", " ")
        return f"{who} {said!r} may speak only for itself, not for {meant!r}"
    return None


async def handle_request(request: Request, command_type: Any, handler: Handler, subject: str | None = None) -> None:
    """Decode one request, run its handler, reply with the result or a typed error.

    The handler runs in a span that continues the caller's trace (the request's `traceparent`). A message
    whose subject is not the endpoint's (`subject`) is dropped unanswered: JetStream delivering a stored
    message (a push consumer someone pointed at the endpoint) is not a command.
    """
    if subject is not None and not subject_matches(subject, request.subject):
        log.warning("dropped a message delivered to a command endpoint from elsewhere", endpoint=subject,
                    subject=request.subject)
        return
    with consumer_span(f"stoker.command {request.subject}", request.headers, kind=SpanKind.SERVER):
        try:
            command = decode_message(command_type, request.data)
            refused = speaker_mismatch(request.subject, command)
            if refused:
                raise Forbidden(refused)
            reply = await handler(command)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            body, headers = error_reply(400, "invalid", f"malformed command: {exc}")
        except DomainError as exc:
            body, headers = error_reply(exc.code, exc.error, exc.message)
        except Exception as exc:
            log.exception("command handler failed", subject=request.subject)
            body, headers = error_reply(500, "internal", f"{exc.__class__.__name__}: {exc}")
        else:
            await request.respond(encode(reply))
            return
    await request.respond(body, headers=headers)


async def start_service(nc: Client, topology: Topology, service: str, version: str,
                        endpoints: dict[str, tuple[Any, Handler]], description: str = "") -> Service:
    """Register a micro service `stoker-<service>` with one endpoint per verb on `stoker.cmd.<service>.<verb>`."""
    svc = await add_service(nc, name=topology.service_name(service), version=version,
                            description=description or f"stoker {service}")
    for verb, (command_type, handler) in endpoints.items():
        subject = endpoint_subject(topology, service, verb, command_type)

        async def on_request(request: Request, command_type: Any = command_type, handler: Handler = handler,
                             subject: str = subject):
            await handle_request(request, command_type, handler, subject)

        await svc.add_endpoint(name=verb, subject=subject, handler=on_request)
    return svc


def endpoint_subject(topology: Topology, service: str, verb: str, command_type: Any) -> str:
    """The subject an endpoint listens on: `stoker.cmd.<service>.<verb>`, with `.*` for workers' own commands."""
    return topology.command(service, verb, "*" if from_worker(command_type) else None)


async def call(nc: Client, topology: Topology, command: Command, reply_type: type[R],
               timeout: float = 5.0) -> R:
    """Send a command to its service and return the typed reply; errors come back as DomainError."""
    subject = command_subject(topology, command)
    with span(f"stoker.call {subject}", kind=SpanKind.CLIENT):
        try:
            msg = await nc.request(subject, encode(command), timeout=timeout, headers=inject_trace({}))
        except nats.errors.NoRespondersError:
            raise NoResponders(f"the {command.service} service is not running (no responder on {subject})") from None
        except nats.errors.TimeoutError:
            raise NoAnswer(f"the {command.service} service did not answer within {timeout:g}s") from None
    if msg.headers and "Nats-Service-Error-Code" in msg.headers:
        try:
            error = decode_message(CommandError, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            code = int(msg.headers["Nats-Service-Error-Code"])
            raise error_for(code, "error", msg.headers.get("Nats-Service-Error", "")) from None
        raise error_for(error.code, error.error, error.message)
    return decode_message(reply_type, msg.data)
