"""`Client` (blocking) and `AsyncClient` (asyncio): the same calls, each running the operations of calls.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets.asyncio.client
import websockets.sync.client
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway.client import calls
from gateway.client.calls import Call, Op, Pause
from gateway.client.config import resolve
from gateway.client.errors import Timeout, Unavailable, error_for
from gateway.client.follow import Follow, Reconnect, Update, advance_bar, progress_bar, refused
from gateway.schemas.jobs import EpisodeSample, JobView, ProgressSample, SubmitJobBody
from gateway.schemas.runs import TestingResults, TrainingLogs

T = TypeVar("T")
RECONNECT_PATIENCE_S = 60.0  # how long `follow` keeps trying to get back to a gateway that went away
SETTLE_S = 30.0  # after the job's final event, how long the read model may take to show it


def job_fields(workload: str | None, params: dict[str, Any] | None, priority: int, labels: Sequence[str],
               idempotency_key: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The SubmitJobBody fields both submissions share."""
    return {"workload": workload, "params": dict(params or {}), "priority": priority, "labels": tuple(labels),
            "idempotency_key": idempotency_key, **extra}


class _Base:
    """What both flavours keep: where the gateway is and the token."""

    def __init__(self, url: str | None, token: str | None, data_dir: str | Path | None) -> None:
        self.url, self._token = resolve(url, token, data_dir)
        self._headers = {"Authorization": f"Bearer {self._token}"}

    @property
    def ws_url(self) -> str:
        """The gateway's live socket."""
        return self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def transport_error(url: str, exc: httpx.TransportError) -> Exception:
    """A failed request as the client's error: a timeout, or the gateway out of reach."""
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"the gateway at {url} did not answer in time ({type(exc).__name__})")
    return Unavailable(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}")


def after_drop(exc: Exception, retry: Reconnect) -> float:
    """The pause before following again on a new connection; raises where reconnecting cannot help."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code < 500:  # 5xx: a gateway still starting
        raise error_for(exc.response.status_code, "the gateway refused the /ws upgrade") from None
    if isinstance(exc, ConnectionClosed):
        why = refused(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")
        if why is not None:
            raise why from None
    return retry.next_delay(exc)


class Client(_Base):
    """The gateway from a script or notebook: `Client()` finds it from STOKER_URL/STOKER_TOKEN or `stoker up` here."""

    def __init__(self, url: str | None = None, token: str | None = None, *, data_dir: str | Path | None = None,
                 timeout: float = 30.0) -> None:
        super().__init__(url, token, data_dir)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _run(self, op: Op[T]) -> T:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as done:
                return done.value
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                reply = None
            else:
                reply = self._send(step)

    def _send(self, call: Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, params=list(call.params), content=call.content(),
                                          headers={"Content-Type": "application/json"} if call.body else None)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from None
        return calls.answer(call, response.status_code, response.content)

    def submit_training(self, workload: str, max_iterations: int, *, params: dict[str, Any] | None = None,
                        priority: int = 0, labels: Sequence[str] = (), idempotency_key: str | None = None,
                        **extra: Any) -> JobView:
        """Queue a training run (`extra`: gpus, timeout_s, max_retries, map_id, as SubmitJobBody has them)."""
        fields = job_fields(workload, params, priority, labels, idempotency_key, extra)
        return self._run(calls.submit(SubmitJobBody(kind="train", max_iterations=max_iterations, **fields)))

    def submit_evaluation(self, checkpoint: str, episodes: int, *, workload: str | None = None,
                          params: dict[str, Any] | None = None, priority: int = 0, labels: Sequence[str] = (),
                          idempotency_key: str | None = None, **extra: Any) -> JobView:
        """Queue an evaluation of training run `checkpoint`'s newest checkpoint (its workload unless given)."""
        fields = job_fields(workload, params, priority, labels, idempotency_key, {"episodes": episodes, **extra})
        return self._run(calls.submit_evaluation(checkpoint, fields))

    def job(self, job_id: str) -> JobView:
        """One job as it stands."""
        return self._run(calls.job(job_id))

    def jobs(self, status: str | Sequence[str] | None = None, *, kind: str | None = None,
             workload: str | None = None, limit: int | None = None) -> list[JobView]:
        """Jobs newest first, by status (one or several), kind and workload; at most `limit`."""
        return self._run(calls.jobs(status, kind, workload, limit))

    def stop(self, job_id: str) -> list[str]:
        """Ask a job to stop (a running one checkpoints first); InvalidRequest when it is already over."""
        return self._run(calls.stop(job_id))

    def logs(self, job_id: str) -> list[ProgressSample]:
        """The job's iteration history: every progress report, oldest first."""
        return self._run(calls.logs(job_id))

    def episodes(self, job_id: str) -> list[EpisodeSample]:
        """An evaluation's episode reports, oldest first, each with its move log."""
        return self._run(calls.episodes(job_id))

    def results(self, job_id: str) -> TestingResults | TrainingLogs:
        """An evaluation's episodes and statistics, or a training run's losses and statistics."""
        return self._run(calls.results(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job once it is over; JobFailed (with its traceback's end) if it failed, Timeout after `timeout` s."""
        return self._run(calls.settle(job_id, timeout, raise_failure=True))

    def follow(self, job_id: str, *, progress: bool = False, from_start: bool = True) -> Iterator[Update | JobView]:
        """The job's progress reports (JobProgress, EpisodeReport) as they come, each once, then the final job.

        A dropped connection (a gateway restart) is resumed where it left off. `from_start` replays what
        was reported before; `progress` shows a tqdm bar when tqdm is installed.
        """
        first = self.job(job_id)
        bar = progress_bar(first) if progress else None
        state = Follow(job_id, from_start)
        try:
            for update in self._updates(state):
                advance_bar(bar, update)
                yield update
            for update in state.catch_up(*self._run(calls.reported_after(job_id, state.cursors["telemetry"]))):
                advance_bar(bar, update)
                yield update
            yield self._run(calls.settle(job_id, SETTLE_S, raise_failure=False))
        finally:
            if bar is not None:
                bar.close()

    def _updates(self, state: Follow) -> Iterator[Update]:
        retry = Reconnect(RECONNECT_PATIENCE_S)
        while not state.done:
            try:
                with websockets.sync.client.connect(self.ws_url, additional_headers=self._headers,
                                                    open_timeout=10, close_timeout=1) as socket:
                    socket.send(state.greet(socket.recv(timeout=10)).decode())
                    retry.connected()
                    while not state.done:
                        yield from state.take(socket.recv(timeout=state.silence_s))
            except (ConnectionClosed, InvalidHandshake, OSError) as exc:
                time.sleep(after_drop(exc, retry))


class AsyncClient(_Base):
    """`Client`'s calls for asyncio: `async with AsyncClient() as stoker: await stoker.job(id)`."""

    def __init__(self, url: str | None = None, token: str | None = None, *, data_dir: str | Path | None = None,
                 timeout: float = 30.0) -> None:
        super().__init__(url, token, data_dir)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _run(self, op: Op[T]) -> T:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as done:
                return done.value
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                reply = None
            else:
                reply = await self._send(step)

    async def _send(self, call: Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, params=list(call.params),
                                                content=call.content(),
                                                headers={"Content-Type": "application/json"} if call.body else None)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from None
        return calls.answer(call, response.status_code, response.content)

    async def submit_training(self, workload: str, max_iterations: int, *, params: dict[str, Any] | None = None,
                              priority: int = 0, labels: Sequence[str] = (), idempotency_key: str | None = None,
                              **extra: Any) -> JobView:
        """Queue a training run (`extra`: gpus, timeout_s, max_retries, map_id, as SubmitJobBody has them)."""
        fields = job_fields(workload, params, priority, labels, idempotency_key, extra)
        return await self._run(calls.submit(SubmitJobBody(kind="train", max_iterations=max_iterations, **fields)))

    async def submit_evaluation(self, checkpoint: str, episodes: int, *, workload: str | None = None,
                                params: dict[str, Any] | None = None, priority: int = 0, labels: Sequence[str] = (),
                                idempotency_key: str | None = None, **extra: Any) -> JobView:
        """Queue an evaluation of training run `checkpoint`'s newest checkpoint (its workload unless given)."""
        fields = job_fields(workload, params, priority, labels, idempotency_key, {"episodes": episodes, **extra})
        return await self._run(calls.submit_evaluation(checkpoint, fields))

    async def job(self, job_id: str) -> JobView:
        """One job as it stands."""
        return await self._run(calls.job(job_id))

    async def jobs(self, status: str | Sequence[str] | None = None, *, kind: str | None = None,
                   workload: str | None = None, limit: int | None = None) -> list[JobView]:
        """Jobs newest first, by status (one or several), kind and workload; at most `limit`."""
        return await self._run(calls.jobs(status, kind, workload, limit))

    async def stop(self, job_id: str) -> list[str]:
        """Ask a job to stop (a running one checkpoints first); InvalidRequest when it is already over."""
        return await self._run(calls.stop(job_id))

    async def logs(self, job_id: str) -> list[ProgressSample]:
        """The job's iteration history: every progress report, oldest first."""
        return await self._run(calls.logs(job_id))

    async def episodes(self, job_id: str) -> list[EpisodeSample]:
        """An evaluation's episode reports, oldest first, each with its move log."""
        return await self._run(calls.episodes(job_id))

    async def results(self, job_id: str) -> TestingResults | TrainingLogs:
        """An evaluation's episodes and statistics, or a training run's losses and statistics."""
        return await self._run(calls.results(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job once it is over; JobFailed (with its traceback's end) if it failed, Timeout after `timeout` s."""
        return await self._run(calls.settle(job_id, timeout, raise_failure=True))

    async def follow(self, job_id: str, *, progress: bool = False,
                     from_start: bool = True) -> AsyncIterator[Update | JobView]:
        """`Client.follow` as an async iterator: `async for update in stoker.follow(job.id): ...`."""
        first = await self.job(job_id)
        bar = progress_bar(first) if progress else None
        state = Follow(job_id, from_start)
        try:
            async for update in self._updates(state):
                advance_bar(bar, update)
                yield update
            for update in state.catch_up(*await self._run(calls.reported_after(job_id, state.cursors["telemetry"]))):
                advance_bar(bar, update)
                yield update
            yield await self._run(calls.settle(job_id, SETTLE_S, raise_failure=False))
        finally:
            if bar is not None:
                bar.close()

    async def _updates(self, state: Follow) -> AsyncIterator[Update]:
        retry = Reconnect(RECONNECT_PATIENCE_S)
        while not state.done:
            try:
                async with websockets.asyncio.client.connect(self.ws_url, additional_headers=self._headers,
                                                             open_timeout=10, close_timeout=1) as socket:
                    async with asyncio.timeout(10):
                        welcome = await socket.recv()
                    await socket.send(state.greet(welcome).decode())
                    retry.connected()
                    while not state.done:
                        async with asyncio.timeout(state.silence_s):
                            text = await socket.recv()
                        for update in state.take(text):
                            yield update
            except (ConnectionClosed, InvalidHandshake, OSError) as exc:
                await asyncio.sleep(after_drop(exc, retry))
