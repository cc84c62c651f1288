"""An authenticated nats-server for tests, from the same generator `stoker up` uses, and a probe that tells
whether the server refused a publish or a subscription (its `-ERR 'Permissions Violation …'`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from contracts.subjects import Topology
from eventstore.connect import credential_options
from eventstore.credentials import CredentialStore
from eventstore.permissions import Role
from eventstore.server import NatsServer, ServerSpec, free_port, write_record


@dataclass
class Probe:
    """A connection as one identity that records what the server refused."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    async def refused(self, action: Any, what: str) -> bool:
        """Run `action` (a coroutine), round-trip to the server, and say whether it refused `what` (a subject).

        The server sends its permissions violation before the answer to a later PING, and nats-py handles
        it in order, so after the round trip it has been seen or it was never sent. Two flushes: nats-py
        writes a flush's PING straight to the socket, ahead of publishes still in its buffer, so the first
        round trip may overtake the action; the second PING leaves after it.
        """
        before = len(self.errors)
        await action
        await self.nc.flush(timeout=10)
        await self.nc.flush(timeout=10)
        return any(what.lower() in e for e in self.errors[before:])

    async def publish_refused(self, subject: str, data: bytes = b"{}", headers: dict | None = None,
                              reply: str = "") -> bool:
        """Whether a core publish to `subject` is refused."""
        return await self.refused(self.nc.publish(subject, data, headers=headers, reply=reply),
                                  f'publish to "{subject}"')

    async def subscribe_refused(self, subject: str) -> bool:
        """Whether subscribing to `subject` is refused."""
        return await self.refused(self.nc.subscribe(subject), f'subscription to "{subject}"')

    async def close(self) -> None:
        await self.nc.close()


@dataclass
class SecuredServer:
    """A nats-server admitting the control-plane roles and some workers, with their generated permissions."""

    server: NatsServer
    credentials: CredentialStore
    topology: Topology
    data_dir: Path
    probes: list[Probe] = field(default_factory=list)

    def credential(self, role: Role, worker_id: str | None = None) -> Path:
        """The seed file of an identity."""
        return self.credentials.worker_path(worker_id) if role == "worker" else self.credentials.role_path(role)

    async def probe(self, role: Role, worker_id: str | None = None) -> Probe:
        """A connection as `role` (a worker: `worker_id`), closed with the server's fixture."""
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(self.server.url, error_cb=on_error, allow_reconnect=False,
                                **credential_options(self.credential(role, worker_id)))
        probe = Probe(nc, errors)
        self.probes.append(probe)
        return probe

    async def close(self) -> None:
        for probe in self.probes:
            if not probe.nc.is_closed:
                await probe.close()
        self.probes.clear()


async def start_secured(base: Path, topology: Topology, workers: tuple[str, ...] = ("w1", "w2")) -> SecuredServer:
    """Credentials in `base/credentials`, a node including their `authorization` block, the platform's streams
    and buckets made by the admin, and a record of the node (so `reload_nats(base)` finds it)."""
    credentials = CredentialStore(base)
    credentials.ensure_control_plane()
    for worker_id in workers:
        credentials.ensure_worker(worker_id)
    credentials.write_authorization(topology)
    spec = ServerSpec(store_dir=base / "nats" / "jetstream", port=free_port(), http_port=free_port(), name="secured",
                      max_file_store="100TB", auth_file=credentials.authorization_path)
    server = await NatsServer(spec).start()
    write_record(base, server)
    return SecuredServer(server, credentials, topology, base)
