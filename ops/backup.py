"""`stoker backup`: the whole platform in one archive (layout: ops/backup_domain.py; the way back: ops/restore.py).

The backup reads a running platform as the admin: the event log first, then the objects and snapshots (a
checkpoint is stored before the event that names it, so every checkpoint the log names is in the archive).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from eventstore.config import config_file
from eventstore.log import JetStreamLog
from eventstore.streams import read_object
from ops import backup_domain as bd
from ops.eventfile import write_events

CHUNK = 1024 * 1024


class HashingFile:
    """A file being written that knows its size and SHA-256 once closed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._out = path.open("wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._out.write(data)

    def close(self) -> bd.Member:
        self._out.close()
        return bd.Member(self.size, self._digest.hexdigest())


class Staging:
    """The members of an archive being made (or unpacked), in a private folder, with their digests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: dict[str, bd.Member] = {}

    def path(self, member: str) -> Path:
        """Where a member lives in the staging folder."""
        return self.root / "m" / member

    def put(self, member: str, data: bytes) -> None:
        """A whole member at once."""
        out = HashingFile(self.path(member))
        out.write(data)
        self.members[member] = out.close()

    @contextlib.contextmanager
    def open(self, member: str) -> Any:
        """A member written piece by piece."""
        out = HashingFile(self.path(member))
        try:
            yield out
        finally:
            self.members[member] = out.close()


async def _events(log: JetStreamLog, staging: Staging) -> bd.Part:
    """The event log, as `stoker events export` writes it."""
    path = staging.path(bd.EVENTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        count, first, last = await write_events(log, out)
    staging.members[bd.EVENTS] = _digest(path)
    return bd.Part(count=count, bytes=path.stat().st_size, first_seq=first, last_seq=last)


def _digest(path: Path) -> bd.Member:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
            size += len(block)
    return bd.Member(size, digest.hexdigest())


async def _objects(js: JetStreamContext, bucket: str, name: str, staging: Staging) -> bd.Part:
    """Every object of a bucket: its bytes (checked against its digest as read) and what describes it."""
    store = await js.object_store(bucket)
    try:
        infos = await store.list(ignore_deletes=True)
    except NotFoundError:
        infos = []
    lines, total = [], 0
    for index, info in enumerate(sorted(infos, key=lambda i: i.name)):
        member = bd.object_member(name, index)
        with staging.open(member) as out:
            await read_object(js, bucket, info, out)
        total += info.size or 0
        lines.append({"name": info.name, "member": member, "size": info.size, "digest": info.digest,
                      "description": info.description, "headers": info.headers})
    staging.put(bd.object_list(name), b"".join(msgspec.json.encode(line) + b"\n" for line in lines))
    return bd.Part(count=len(lines), bytes=total)


async def _snapshots(kv: KeyValue, staging: Staging) -> bd.Part:
    """The snapshot bucket's keys and values."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        keys = []
    lines = []
    for key in sorted(keys):
        with contextlib.suppress(NotFoundError):
            entry = await kv.get(key)
            lines.append({"key": key, "value": base64.b64encode(entry.value or b"").decode()})
    staging.put(bd.SNAPSHOTS, b"".join(msgspec.json.encode(line) + b"\n" for line in lines))
    return bd.Part(count=len(lines))


def _identity(data: Path, staging: Staging) -> bool:
    """The data dir's identity files (credentials, CA, admin token, platform id); whether there were any."""
    found = False
    for top in bd.IDENTITY_PATHS:
        root = data / top
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for path in paths:
            member = bd.identity_member(path.relative_to(data).as_posix())
            if member is not None:
                staging.put(member, path.read_bytes())
                found = True
    return found


async def write_backup(log: JetStreamLog, data: Path, target: Path, source: str) -> bd.Manifest:
    """Everything of the platform `log` belongs to, and `data`'s identity files, into the archive `target` (0600)."""
    topology = log.topology
    target.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".stoker-backup-", dir=target.parent))  # 0700
    try:
        staging = Staging(root)
        events = await _events(log, staging)
        buckets = {name: await _objects(log.js, bucket, name, staging)
                   for name, bucket in (("checkpoints", topology.checkpoint_bucket), ("maps", topology.map_bucket))}
        snapshots = await _snapshots(await log.js.key_value(topology.snapshot_bucket), staging)
        settings = config_file()
        if settings is not None:
            staging.put(bd.SETTINGS, settings.read_bytes())
        manifest = bd.Manifest(
            created_at=datetime.now(UTC).isoformat(), stoker_version=_version(), prefix=topology.prefix,
            source=source, events=events, buckets=buckets, snapshots=snapshots, settings=settings is not None,
            secrets=_identity(data, staging), members=dict(sorted(staging.members.items())))
        _pack(staging, manifest, target)
        return manifest
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _version() -> str:
    try:
        return importlib.metadata.version("stoker")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _pack(staging: Staging, manifest: bd.Manifest, target: Path) -> None:
    """The archive: the manifest first, then every member; written beside `target` (0600) and moved into place."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            staging.put(bd.MANIFEST, bd.encode_manifest(manifest))
            for member in [bd.MANIFEST, *manifest.members]:
                tar.add(staging.path(member), arcname=member, recursive=False, filter=_private)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
    return info
