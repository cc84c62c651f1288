"""Maps: the bytes in the JetStream object store (under their SHA-256), the events in the log.

An upload stores the bytes first, then claims the next free map number with `MapUploaded`; bytes whose
claim failed are only an orphan object (the same content is stored once, whoever uploads it).
"""

from __future__ import annotations

import hashlib
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from contracts import events as ev
from contracts.base import utcnow
from contracts.errors import Conflict, NotFound
from eventstore.decision import Folded, run_decision
from eventstore.ports import EventLog
from eventstore.readmodels.maps import highest_map_id, map_users
from eventstore.stores.base import ReadModelStore
from eventstore.streams import open_object_store
from gateway import maps_domain

AGGREGATE = "map"
MAX_CLAIMS = 1000  # numbers tried past the read model's highest (it may lag the log)


class MapFiles:
    """The maps bucket; created on first use."""

    def __init__(self, js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
        self.js, self.bucket_name, self.replicas = js, bucket, replicas
        self._bucket: Any = None

    async def bucket(self) -> Any:
        """The object store handle."""
        if self._bucket is None:
            self._bucket = await open_object_store(self.js, self.bucket_name)  # made by the admin (`stoker up`)
        return self._bucket

    async def put(self, sha256: str, data: bytes) -> None:
        """Store the bytes under their digest (already there: nothing to do)."""
        bucket = await self.bucket()
        try:
            info = await bucket.get_info(sha256)
            if info is not None and info.size == len(data) and not info.deleted:
                return
        except (NotFoundError, ObjectNotFoundError):
            pass
        await bucket.put(sha256, data)

    async def get(self, sha256: str) -> bytes:
        """The bytes stored under a digest, checked against it; NotFound when they are gone."""
        bucket = await self.bucket()
        try:
            result = await bucket.get(sha256)
        except (NotFoundError, ObjectNotFoundError):
            raise NotFound(f"the map file {sha256[:12]}… is gone from the object store") from None
        data = result.data or b""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise NotFound(f"the map file {sha256[:12]}… in the object store does not match its digest")
        return data


async def load_map(event_log: EventLog, map_id: int) -> Folded[maps_domain.MapState]:
    """A map number's newest event and its version."""
    events, version = await event_log.load(AGGREGATE, str(map_id))
    state: maps_domain.MapState = None
    for stored in events:
        state = maps_domain.evolve(state, stored.event)
    return Folded(state, {str(map_id): version})


async def claim(event_log: EventLog, upload: ev.MapUploaded) -> int:
    """Append the upload under its number (Conflict when the number is taken); returns its sequence."""
    decided = await run_decision(event_log, AGGREGATE, lambda state: maps_domain.decide_upload(state, upload),
                                 maps_domain.evolve, load=lambda: load_map(event_log, upload.map_id))
    return decided.last_seq


async def upload_map(event_log: EventLog, store: ReadModelStore, files: MapFiles, data: bytes,
                     filename: str | None, name: str | None, limit: int) -> tuple[ev.MapUploaded, int]:
    """Check, store and record a map (the gateway and `stoker maps upload` alike); returns its event and
    the log sequence it was written at."""
    clean_file = maps_domain.check_filename(filename)
    clean_name = maps_domain.check_name(name, clean_file)
    maps_domain.check_size(len(data), limit)
    digest = hashlib.sha256(data).hexdigest()
    await files.put(digest, data)
    candidate = await highest_map_id(store) + 1
    for _ in range(MAX_CLAIMS):
        upload = ev.MapUploaded(map_id=candidate, name=clean_name, filename=clean_file, sha256=digest,
                                size=len(data), uploaded_at=utcnow())
        try:
            return upload, await claim(event_log, upload)
        except Conflict:
            candidate += 1
    raise Conflict(f"no free map number found after {MAX_CLAIMS} tries; try again")


async def delete_map(event_log: EventLog, store: ReadModelStore, map_id: int) -> int:
    """Delete a map no unfinished job uses (409 naming them); returns the log sequence of MapDeleted."""
    users = await map_users(store, map_id)
    deletion = ev.MapDeleted(map_id=map_id, deleted_at=utcnow())
    decided = await run_decision(event_log, AGGREGATE,
                                 lambda state: maps_domain.decide_delete(state, deletion, users),
                                 maps_domain.evolve, load=lambda: load_map(event_log, map_id))
    return decided.last_seq
