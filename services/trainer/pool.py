"""Warm job processes: a zygote per workload module (LRU-bounded) and spare children kept ready."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from eventstore.observability import get_logger
from services.trainer.processes import ChildProcess, Zygote, ZygoteGone

log = get_logger(component="pool")
BASE = ""  # the key of the zygote with no workload imports


class WarmPool:
    """Zygotes by workload module (LRU-bounded) and `spares` forked children kept ready for each."""

    def __init__(self, preload: tuple[str, ...] = (), spares: int = 1, max_zygotes: int = 3) -> None:
        self.preload, self.spares_wanted, self.max_zygotes = preload, spares, max_zygotes
        self.zygotes: OrderedDict[str, Zygote] = OrderedDict()
        self.spares: dict[str, deque[ChildProcess]] = {}
        self._starting: dict[str, asyncio.Task] = {}
        self._refills: dict[str, asyncio.Task] = {}
        self._failed: set[str] = set()
        self._retiring: set[asyncio.Task] = set()
        self.closed = False

    async def start(self) -> None:
        """The base zygote and its spares."""
        await self._start_zygote(BASE)

    async def _start_zygote(self, key: str) -> Zygote:
        zygote = Zygote(("services.trainer.child", *self.preload, *([key] if key else [])))
        try:
            await zygote.start()
        except BaseException:
            await zygote.close()
            raise
        if self.closed:
            await zygote.close()
            raise ZygoteGone("pool closed")
        self.zygotes[key] = zygote
        self.spares.setdefault(key, deque())
        while len(self.zygotes) > self.max_zygotes:
            self._retire(next(k for k in self.zygotes if k != BASE and k != key))
        self._refill(key)
        return zygote

    def _retire(self, key: str) -> None:
        """Stop using a zygote; it ends once the jobs it forked have (they die with it)."""
        zygote = self.zygotes.pop(key)
        for spare in self.spares.pop(key, deque()):
            spare.close()
        task = asyncio.create_task(self._close_when_idle(zygote))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, zygote: Zygote) -> None:
        await zygote.idle()
        await zygote.close()

    async def _drop(self, key: str) -> None:
        zygote = self.zygotes.pop(key)
        for spare in self.spares.pop(key, deque()):
            spare.close()
        await zygote.close()

    def warm_up(self, key: str) -> None:
        """Start a zygote with `key` imported, in the background (once)."""
        if not self.spares_wanted or key in self.zygotes or key in self._starting or key in self._failed \
                or self.closed:
            return  # without spares nothing is kept warm (a cold start costs the job, not the host)
        self._starting[key] = asyncio.create_task(self._warm(key))

    async def _warm(self, key: str) -> None:
        try:
            await self._start_zygote(key)
        except (OSError, ZygoteGone, TimeoutError) as exc:
            self._failed.add(key)
            log.warning("no warm zygote for workload module", module=key, error=repr(exc))
        finally:
            self._starting.pop(key, None)

    async def acquire(self, key: str = BASE) -> ChildProcess:
        """A child ready for its Start: a warm spare when there is one, else a fresh fork."""
        key = key if key in self.zygotes else BASE
        if key in self.zygotes:
            self.zygotes.move_to_end(key)
        spares = self.spares.setdefault(key, deque())
        while spares:
            spare = spares.popleft()
            if spare.alive:
                self._refill(key)
                return spare
            spare.close()
        child = await (await self._zygote(key)).fork()
        self._refill(key)
        return child

    async def _zygote(self, key: str) -> Zygote:
        zygote = self.zygotes.get(key)
        if zygote is None or zygote.gone:
            if zygote is not None:
                await self._drop(key)
            log.warning("zygote gone, starting another", module=key or "base")
            zygote = await self._start_zygote(key)
        return zygote

    def _refill(self, key: str) -> None:
        if self.spares_wanted and not self.closed and key not in self._refills:
            self._refills[key] = asyncio.create_task(self._fill(key))

    async def _fill(self, key: str) -> None:
        try:
            while not self.closed and key in self.zygotes and len(self.spares[key]) < self.spares_wanted:
                self.spares[key].append(await (await self._zygote(key)).fork())
        except (OSError, ZygoteGone) as exc:
            log.warning("could not fork a spare", module=key or "base", error=repr(exc))
        finally:
            self._refills.pop(key, None)

    async def close(self) -> None:
        """Let spares go and stop every zygote (running jobs are the runners' to end)."""
        self.closed = True
        tasks = [*self._starting.values(), *self._refills.values(), *self._retiring]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for key in list(self.zygotes):
            await self._drop(key)
