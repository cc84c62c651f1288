"""stoker's streams (their configurations) and buckets: created idempotently by the admin (on one node or an R3
cluster), checked by the services, which may not create them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import BinaryIO

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectInfo,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, DigestMismatchError, NotFoundError

from contracts.subjects import MAX_EVENT_BYTES, MAX_TELEMETRY_BYTES, Topology
from eventstore.permissions import kv_stream, object_stream
from eventstore.ports import StreamMissing


def events_stream_config(topology: Topology, replicas: int = 1) -> StreamConfig:
    """The event log: file storage, kept forever, never deleted or purged, deduplicated by event id."""
    return StreamConfig(
        name=topology.events_stream,
        subjects=[topology.all_events],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        max_msg_size=MAX_EVENT_BYTES,
        duplicate_window=10 * 60,
        deny_delete=True,
        deny_purge=True,
        allow_atomic=True,
        allow_direct=True,
        num_replicas=replicas,
        description="stoker event log: the source of truth",
    )


def telemetry_stream_config(topology: Topology, replicas: int = 1) -> StreamConfig:
    """Telemetry: progress, episodes, heartbeats; bounded by age and size, old samples go first."""
    return StreamConfig(
        name=topology.telemetry_stream,
        subjects=[f"{topology.prefix}.telemetry.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=7 * 86400,
        max_bytes=2 * 1024**3,
        max_msgs_per_subject=200_000,
        max_msg_size=MAX_TELEMETRY_BYTES,
        allow_direct=True,
        num_replicas=replicas,
        description="stoker telemetry: progress, episodes, heartbeats",
    )


def dispatch_stream_config(topology: Topology, replicas: int = 1) -> StreamConfig:
    """Per-worker queues of assignments; consumed and acknowledged by each worker's durable consumer."""
    return StreamConfig(
        name=topology.dispatch_stream,
        subjects=[topology.dispatch("*")],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=7 * 86400,
        duplicate_window=10 * 60,
        max_msg_size=MAX_EVENT_BYTES,
        num_replicas=replicas,
        description="stoker dispatch: assignments and stop requests per worker",
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig, attempts: int = 40) -> None:
    """Create the stream, or update it to `config`; waits out a cluster still electing its leader."""
    for attempt in range(attempts):
        try:
            try:
                await js.stream_info(config.name)
            except NotFoundError:
                await js.add_stream(config)
            else:
                await js.update_stream(config)
            return
        except (nats.errors.TimeoutError, APIError) as exc:
            if isinstance(exc, BadRequestError) and "already in use" in str(exc):
                raise
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)


async def ensure_streams(js: JetStreamContext, topology: Topology, replicas: int = 1) -> None:
    """Every stream and bucket stoker uses: events, telemetry, dispatch, leases, snapshots, checkpoints, maps.

    Only the admin identity may do this (docs/security.md): `stoker up` does it before any service starts.
    """
    for config in (events_stream_config(topology, replicas), telemetry_stream_config(topology, replicas),
                   dispatch_stream_config(topology, replicas)):
        await ensure_stream(js, config)
    for bucket in (topology.lease_bucket, topology.snapshot_bucket):
        await ensure_kv(js, bucket, replicas)
    for bucket in (topology.checkpoint_bucket, topology.map_bucket):
        await ensure_object_store(js, bucket, replicas)


async def ensure_kv(js: JetStreamContext, bucket: str, replicas: int = 1, history: int = 1, ttl: float = 0):
    """A KV bucket, created if missing; with direct gets, so that a key's reader can be allowed that key alone."""
    try:
        info = await js.stream_info(kv_stream(bucket))
    except NotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=bucket, history=history, replicas=replicas, ttl=ttl or None, storage=StorageType.FILE,
            direct=True))
    if not info.config.allow_direct:  # made by an older stoker: reads go by subject from now on
        await js.update_stream(info.config.evolve(allow_direct=True))
    return await js.key_value(bucket)


async def ensure_object_store(js: JetStreamContext, bucket: str, replicas: int = 1):
    """An object store bucket, created if missing."""
    try:
        return await js.object_store(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_object_store(bucket, ObjectStoreConfig(
            bucket=bucket, replicas=replicas, storage=StorageType.FILE))


def missing(what: str) -> StreamMissing:
    """The error of a service that finds a stream or bucket missing: who makes it."""
    return StreamMissing(f"{what} does not exist: stoker's streams and buckets are made by the admin identity "
                         "(`stoker up` does it before the services start); start the platform with `stoker up`")


async def require_streams(js: JetStreamContext, names: list[str]) -> None:
    """Check that each stream exists (a service may not create them); StreamMissing says which does not."""
    for name in names:
        try:
            await js.stream_info(name)
        except NotFoundError:
            raise missing(f"stream {name}") from None


async def open_kv(js: JetStreamContext, bucket: str):
    """An existing KV bucket (a service may not create one); StreamMissing when it is not there."""
    try:
        return await js.key_value(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        raise missing(f"KV bucket {bucket}") from None


async def open_object_store(js: JetStreamContext, bucket: str):
    """An existing object store bucket; StreamMissing when it is not there."""
    try:
        return await js.object_store(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        raise missing(f"object store bucket {bucket}") from None


async def read_object(js: JetStreamContext, bucket: str, info: ObjectInfo, out: BinaryIO) -> None:
    """Copy a stored object's chunks into `out`, one direct get each, and check its digest.

    No consumer is made: a worker may not create consumers on the checkpoint bucket, since a push consumer
    delivers where its creator says, chunks it wrote itself included (docs/security.md). Raises
    DigestMismatchError when the chunks do not match the object's digest, NotFoundError when one is gone.
    """
    stream, subject = object_stream(bucket), f"$O.{bucket}.C.{info.nuid}"
    digest, seq = hashlib.sha256(), 1
    for _ in range(info.chunks or 0):
        msg = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
        data = msg.data or b""
        digest.update(data)
        await asyncio.to_thread(out.write, data)
        seq = int(msg.seq or seq) + 1
    expected = (info.digest or "").split("=", 1)[-1]
    if digest.digest() != base64.urlsafe_b64decode(expected + "=" * (-len(expected) % 4)):
        raise DigestMismatchError
