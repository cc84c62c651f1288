"""The join desk: `stoker up` runs it where other machines can reach NATS, to answer `ClaimJoinToken`.

It runs on the control-plane machine because it changes who may connect to NATS there (`NatsUsers`), and it
appends the join-token events as the platform's admin. Every minute it also drops the credentials of tokens
that can no longer be claimed (expired, revoked, used), so an old token stops connecting at all.
"""

from __future__ import annotations

import asyncio

from contracts.base import utcnow
from contracts.commands import ClaimJoinToken, JoinClaimed
from eventstore.micro import start_service
from eventstore.observability import get_logger
from eventstore.service import ServiceContext, run_service
from ops import join_domain
from ops.joining import NatsUsers, claim_join_token, load_join_tokens, nats_users

log = get_logger(component="joins")
VERSION = "0.1.0"
SWEEP_S = 60.0
REPLY_GRACE_S = 2.0  # a claim's reply reaches the claimer before its single-use credential is dropped


class JoinDesk:
    """Answers claims; keeps the NATS users of join tokens in step with the log."""

    def __init__(self, ctx: ServiceContext, users: NatsUsers) -> None:
        self.ctx, self.users = ctx, users
        self.sweep_soon = asyncio.Event()

    async def claim(self, command: ClaimJoinToken) -> JoinClaimed:
        """A machine joins (see ops.joining.claim_join_token); a used-up token's key goes at the next sweep,
        which comes as soon as the reply is out."""
        record = await claim_join_token(self.ctx.log, command, self.users)
        if record.status(utcnow()) != "active":
            self.sweep_soon.set()
        return JoinClaimed(worker_id=command.worker_id, labels=list(record.labels))

    async def sweep(self) -> None:
        """Drop the credentials of tokens that can no longer claim anything."""
        tokens = (await load_join_tokens(self.ctx.log)).state
        stale = join_domain.keys_to_drop(tokens, utcnow())
        if stale:
            await self.users.remove(stale)

    async def run(self) -> None:
        """Serve claims until `ctx.stop`, sweeping now and then."""
        service = await start_service(self.ctx.nc, self.ctx.topology, "join", VERSION,
                                      {"claim": (ClaimJoinToken, self.claim)}, "stoker join desk")
        log.info("join desk open")
        stopper = asyncio.create_task(self.ctx.stop.wait())
        try:
            while not self.ctx.stop.is_set():
                try:
                    await self.sweep()
                except Exception as exc:  # a sweep that fails is tried again at the next one
                    log.warning("sweep of join credentials failed", error=repr(exc))
                soon = asyncio.create_task(self.sweep_soon.wait())
                await asyncio.wait({stopper, soon}, timeout=SWEEP_S, return_when=asyncio.FIRST_COMPLETED)
                soon.cancel()
                if self.sweep_soon.is_set() and not self.ctx.stop.is_set():
                    self.sweep_soon.clear()
                    await asyncio.wait({stopper}, timeout=REPLY_GRACE_S)
        finally:
            stopper.cancel()
            await service.stop()


async def main(ctx: ServiceContext) -> None:
    """Open the desk until SIGTERM."""
    await JoinDesk(ctx, nats_users(ctx.settings.data_path, ctx.topology)).run()


def cli_main() -> None:
    """Run the join desk until SIGTERM."""
    run_service("joins", main)


if __name__ == "__main__":
    cli_main()
