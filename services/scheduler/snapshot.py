"""Snapshots of the board in the KV bucket `Topology.snapshot_bucket`, so a start does not replay everything.

Layout: key `scheduler` holds a small JSON manifest (format, seq, slot, chunk count, size, SHA-256);
keys `scheduler.<slot>.<n>` hold the zlib-compressed msgpack of the board, in chunks below NATS's
maximum payload. Snapshots alternate between slots `a` and `b` and the chunks are written before
the manifest that names them, so the manifest always points at a complete snapshot and the bucket
holds a bounded number of keys. A snapshot that cannot be read (another format, a digest that does
not match, a missing chunk) is ignored: the log is replayed instead.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Generic, TypeVar

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from eventstore.observability import get_logger

log = get_logger(component="snapshot")
S = TypeVar("S")
# Bump when the board's layout changes incompatibly: old snapshots are then ignored. 2: a job keeps `job.spec`.
FORMAT = 2
CHUNK_BYTES = 256 * 1024


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Where a snapshot's bytes are and how to check them."""

    format: int
    seq: int
    slot: str
    chunks: int
    size: int
    sha256: str


class SnapshotStore(Generic[S]):
    """Save and load one state type under one key."""

    def __init__(self, kv: KeyValue, key: str, state_type: type[S]) -> None:
        self.kv, self.key, self.state_type = kv, key, state_type
        self._decoder = msgspec.msgpack.Decoder(state_type)

    async def load(self) -> tuple[int, S] | None:
        """The newest snapshot as (seq, state), or None when there is none usable."""
        manifest = await self._manifest()
        if manifest is None:
            return None
        try:
            parts = [(await self.kv.get(self._chunk_key(manifest.slot, n))).value for n in range(manifest.chunks)]
            blob = zlib.decompress(b"".join(p or b"" for p in parts))
            if hashlib.sha256(blob).hexdigest() != manifest.sha256:
                raise ValueError("digest mismatch")
            return manifest.seq, self._decoder.decode(blob)
        except (KeyNotFoundError, KeyDeletedError, zlib.error, ValueError, msgspec.DecodeError) as exc:
            log.warning("ignoring unreadable snapshot, replaying the log", key=self.key, reason=repr(exc))
            return None

    async def save(self, seq: int, state: S) -> Manifest:
        """Store `state` as of stream sequence `seq`, replacing the previous snapshot."""
        blob = msgspec.msgpack.encode(state)
        packed = zlib.compress(blob, 1)
        chunks = [packed[i:i + CHUNK_BYTES] for i in range(0, len(packed), CHUNK_BYTES)] or [b""]
        previous = await self._manifest()
        slot = "b" if previous is not None and previous.slot == "a" else "a"
        for n, chunk in enumerate(chunks):
            await self.kv.put(self._chunk_key(slot, n), chunk)
        manifest = Manifest(format=FORMAT, seq=seq, slot=slot, chunks=len(chunks), size=len(blob),
                            sha256=hashlib.sha256(blob).hexdigest())
        await self.kv.put(self.key, msgspec.json.encode(manifest))
        log.info("snapshot saved", key=self.key, seq=seq, bytes=len(packed))
        return manifest

    async def _manifest(self) -> Manifest | None:
        try:
            entry = await self.kv.get(self.key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        try:
            manifest = msgspec.json.decode(entry.value or b"", type=Manifest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return manifest if manifest.format == FORMAT else None

    def _chunk_key(self, slot: str, n: int) -> str:
        return f"{self.key}.{slot}.{n}"
