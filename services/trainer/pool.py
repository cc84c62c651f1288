"""Warm job processes: a zygote per workload module (LRU-bounded) and spare children kept ready.

A job process whose workload passes it on (`@workload(reuse_process=True)`, wire.Done.reusable) comes back
after its job and runs the next job of that same workload: no fork, no exit. Such kept processes count
towards a zygote's spares, so a worker that runs only such jobs forks none once it has `spares` of them.
"""

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
        self.kept: dict[tuple[str, str], deque[ChildProcess]] = {}  # idle kept processes by (key, target)
        self._kept_count: dict[Zygote, int] = {}  # kept processes of each zygote, idle or running a job
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
        self._let_go(key, zygote)
        task = asyncio.create_task(self._close_when_idle(zygote))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, zygote: Zygote) -> None:
        await zygote.idle()
        await zygote.close()

    async def _drop(self, key: str) -> None:
        zygote = self.zygotes.pop(key)
        self._let_go(key, zygote)
        await zygote.close()

    def _let_go(self, key: str, zygote: Zygote) -> None:
        """Close the spares and idle kept processes of a zygote that is no longer used."""
        for spare in self.spares.pop(key, deque()):
            spare.close()
        for kept_key in [k for k in self.kept if k[0] == key]:
            for child in self.kept.pop(kept_key):
                child.close()
        self._kept_count.pop(zygote, None)

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

    async def acquire(self, key: str = BASE, target: str = "") -> ChildProcess:
        """A child ready for its Start: a kept process of the same `target`, a warm spare, else a fresh fork."""
        key = key if key in self.zygotes else BASE
        if key in self.zygotes:
            self.zygotes.move_to_end(key)
        kept = self.kept.get((key, target))
        while kept:
            child = kept.popleft()
            if child.alive and child.origin is self.zygotes.get(key):
                return child
            self._forget_kept(child)
            child.close()
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

    def release(self, child: ChildProcess, key: str, target: str, reusable: bool) -> None:
        """A job's process after its job: kept for the next job of `target` when it may be, else closed."""
        key = key if key in self.zygotes else BASE
        zygote = self.zygotes.get(key)
        keep = reusable and not self.closed and zygote is not None and child.origin is zygote and child.alive
        if keep and not child.kept:
            keep = self._kept_count.get(zygote, 0) < self.spares_wanted
            if keep:
                child.kept = True
                self._kept_count[zygote] = self._kept_count.get(zygote, 0) + 1
                spares = self.spares.get(key)
                if spares and len(spares) + self._kept_count[zygote] > self.spares_wanted:
                    spares.pop().close()  # a fresh spare fewer: this one is as ready
        if keep:
            self.kept.setdefault((key, target), deque()).append(child)
            return
        self._forget_kept(child)
        child.close()
        self._refill(key)

    def _forget_kept(self, child: ChildProcess) -> None:
        if child.kept and child.origin in self._kept_count:
            self._kept_count[child.origin] -= 1
        child.kept = False

    def _refill(self, key: str) -> None:
        if self.spares_wanted and not self.closed and key not in self._refills:
            self._refills[key] = asyncio.create_task(self._fill(key))

    async def _fill(self, key: str) -> None:
        try:
            while not self.closed and key in self.zygotes and \
                    len(self.spares[key]) + self._kept_count.get(self.zygotes[key], 0) < self.spares_wanted:
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
