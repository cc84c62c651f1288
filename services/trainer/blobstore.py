"""Checkpoints in the JetStream object store: upload from a spool file, fetch and verify into one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import DigestMismatchError, NotFoundError

from contracts.dispatch import CheckpointRef
from eventstore.observability import get_logger
from eventstore.streams import open_object_store, read_object
from services.trainer.checkpoint_format import file_sha256
from services.trainer.checkpoints import FORMAT_HEADER, CheckpointUnavailable, Fetched, nats_digest_hex

log = get_logger(component="checkpoints")
TRANSIENT = (nats.errors.TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoRespondersError,
             nats.errors.ConnectionReconnectingError, asyncio.TimeoutError)


def format_of(headers: dict[str, Any] | None) -> str:
    """The format recorded with an object (headers are Go-style lists or plain strings)."""
    value = (headers or {}).get(FORMAT_HEADER, "")
    return (value[0] if value else "") if isinstance(value, list) else str(value)


class CheckpointStore:
    """The checkpoint bucket (made by the admin with the streams); opened on first use."""

    def __init__(self, js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
        self.js, self.bucket_name, self.replicas = js, bucket, replicas
        self._bucket: Any = None

    async def bucket(self) -> Any:
        """The object store handle."""
        if self._bucket is None:
            self._bucket = await open_object_store(self.js, self.bucket_name)
        return self._bucket

    async def upload(self, path: Path, name: str, fmt: str, budget_s: float) -> str:
        """Store the file under `name`, retrying transient failures for `budget_s`; returns its SHA-256."""
        deadline, delay = asyncio.get_running_loop().time() + budget_s, 0.1
        while True:
            try:
                bucket = await self.bucket()
                with path.open("rb") as data:
                    info = await bucket.put(name, data, meta=ObjectMeta(headers={FORMAT_HEADER: [fmt]}))
                return nats_digest_hex(info.digest) or ""
            except TRANSIENT as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise CheckpointUnavailable(f"could not store checkpoint {name}: {exc!r}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def fetch(self, ref: CheckpointRef, dest: Path, attempts: int = 5) -> Fetched | None:
        """Download `ref` into `dest`; None when it is gone. The caller checks the digest."""
        for attempt in range(attempts):
            try:
                return await self._fetch_once(ref, dest)
            except TRANSIENT as exc:
                if attempt == attempts - 1:
                    raise CheckpointUnavailable(f"could not fetch checkpoint {ref.name}: {exc!r}") from None
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _fetch_once(self, ref: CheckpointRef, dest: Path) -> Fetched | None:
        bucket = await self.bucket()
        try:
            info = await bucket.get_info(ref.name)
        except NotFoundError:
            log.warning("checkpoint missing", name=ref.name)
            return None
        stored = nats_digest_hex(info.digest)
        fmt = format_of(info.headers)
        if stored is not None and stored != ref.sha256.lower():
            # Replaced or damaged: no need to download what cannot match.
            log.warning("checkpoint digest mismatch", name=ref.name, expected=ref.sha256, stored=stored)
            return Fetched(dest, stored, fmt)
        try:
            with dest.open("wb") as out:
                await read_object(self.js, self.bucket_name, info, out)
        except DigestMismatchError:
            log.warning("checkpoint chunks do not match their digest", name=ref.name)
            return Fetched(dest, "", fmt)
        except NotFoundError:
            return None
        digest, _size = await asyncio.to_thread(file_sha256, dest)
        return Fetched(dest, digest, fmt)


class AssetUnavailable(RuntimeError):
    """A job's map could not be fetched, or its bytes do not match the digest the job pinned."""


async def fetch_asset(js: JetStreamContext, bucket_name: str, sha256: str, dest: Path, attempts: int = 5) -> Path:
    """Download the map stored under `sha256` into `dest` and check it; AssetUnavailable if it cannot be."""
    for attempt in range(attempts):
        try:
            bucket = await js.object_store(bucket_name)
            info = await bucket.get_info(sha256)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as out:
                await read_object(js, bucket_name, info, out)  # direct gets: a worker may make no consumer here
            break
        except (NotFoundError, nats.js.errors.BucketNotFoundError, nats.js.errors.ObjectNotFoundError):
            raise AssetUnavailable(f"the map {sha256[:12]}… is not in the object store") from None
        except DigestMismatchError:
            raise AssetUnavailable(f"the map {sha256[:12]}… is damaged in the object store") from None
        except TRANSIENT as exc:
            if attempt == attempts - 1:
                raise AssetUnavailable(f"could not fetch the map {sha256[:12]}…: {exc!r}") from None
            await asyncio.sleep(0.2 * 2**attempt)
    digest, _size = await asyncio.to_thread(file_sha256, dest)
    if digest != sha256:
        raise AssetUnavailable(f"the map fetched does not match its digest (expected {sha256[:12]}…, got "
                               f"{digest[:12]}…)")
    return dest
