"""Creating stoker's streams and buckets, idempotently, on a single node or an R3 cluster."""

from __future__ import annotations

import asyncio

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

from contracts.subjects import (
    Topology,
    dispatch_stream_config,
    events_stream_config,
    telemetry_stream_config,
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
    """Every stream stoker uses: events, telemetry, dispatch."""
    for config in (events_stream_config(topology, replicas), telemetry_stream_config(topology, replicas),
                   dispatch_stream_config(topology, replicas)):
        await ensure_stream(js, config)


async def ensure_kv(js: JetStreamContext, bucket: str, replicas: int = 1, history: int = 1, ttl: float = 0):
    """A KV bucket, created if missing."""
    try:
        return await js.key_value(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_key_value(KeyValueConfig(
            bucket=bucket, history=history, replicas=replicas, ttl=ttl or None, storage=StorageType.FILE))


async def ensure_object_store(js: JetStreamContext, bucket: str, replicas: int = 1):
    """An object store bucket, created if missing."""
    try:
        return await js.object_store(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_object_store(bucket, ObjectStoreConfig(
            bucket=bucket, replicas=replicas, storage=StorageType.FILE))
