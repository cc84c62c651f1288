"""`stoker backup` and `stoker restore`: the whole platform in one archive, and back (layout: ops/backup_domain.py).

A backup reads a running platform as the admin: the event log first, then the objects and snapshots (a
checkpoint is stored before the event that names it, so every named one is in). A restore checks every
member against the manifest, puts the identity files back, starts the embedded nats-server on the new data
dir, and appends the events with their original ids and headers at their original sequences.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from contracts.subjects import Topology
from eventstore.config import config_file
from eventstore.connect import connect
from eventstore.credentials import WORKER_ID_FILE, CredentialStore, derived_worker_id
from eventstore.log import JetStreamLog
from eventstore.server import embedded_node, free_port
from eventstore.streams import read_object
from ops import backup_domain as bd
from ops.eventfile import append_all, read_export, write_events
from ops.lock import DataDirLock

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


# Restore.


def unpack(archive: Path, staging: Staging) -> bd.Manifest:
    """Every member into `staging`, then checked against the manifest; BadArchive says what does not match."""
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise bd.BadArchive(f"{archive} cannot be read as a tar archive ({exc})") from None
    manifest_data = None
    with tar:
        for info in tar:
            if not info.isfile():
                raise bd.BadArchive(f"member {info.name!r} is not a plain file")
            if info.name == bd.MANIFEST:
                manifest_data = tar.extractfile(info).read()  # type: ignore[union-attr]
                continue
            _check_name(info.name)
            with staging.open(info.name) as out:
                source = tar.extractfile(info)
                assert source is not None
                while block := source.read(CHUNK):
                    out.write(block)
    if manifest_data is None:
        raise bd.BadArchive(f"{archive} holds no {bd.MANIFEST}: it is not a stoker backup")
    manifest = bd.decode_manifest(manifest_data)
    problems = bd.member_problems(manifest, staging.members)
    if problems:
        raise bd.BadArchive(f"{archive} does not match its manifest: " + "; ".join(problems))
    return manifest


def _check_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "" in parts:
        raise bd.BadArchive(f"member {name!r} has an unsafe name")
    if name.startswith(bd.FILES):
        bd.restored_path(name)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def put_identity(staging: Staging, data: Path) -> int:
    """The identity files back into the data dir (files 0600, folders 0700); how many."""
    count = 0
    for member in staging.members:
        if member.startswith(bd.FILES):
            path = data / bd.restored_path(member)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(staging.path(member).read_bytes())
            count += 1
    return count


def choose_local_worker(data: Path, credentials: CredentialStore) -> str:
    """The restored platform's own worker: a new id when a worker of the backup had the derived one."""
    earlier = set(credentials.workers())
    chosen = bd.fresh_worker_id(derived_worker_id(socket.gethostname(), data), earlier, secrets.token_hex(3))
    path = data / "trainer" / WORKER_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(chosen + "\n")
    return chosen


async def load_platform(staging: Staging, data: Path, prefix: str, replicas: int) -> dict[str, int]:
    """Start the embedded nats-server on `data` as the admin, and put the log, objects and snapshots back."""
    topology = Topology(prefix)
    credentials = CredentialStore(data)
    credentials.ensure_control_plane()
    credentials.write_authorization(topology)
    node = embedded_node(data, port=free_port(), http_port=free_port(), auth_file=credentials.authorization_path)
    await node.start(30.0)
    try:
        nc = await connect(node.url, "stoker-restore", credentials=credentials.role_path("admin"), reconnect=False)
        try:
            log = JetStreamLog(nc, topology, timeout=15.0)
            await log.ensure_streams(replicas)
            if await log.last_seq():
                raise bd.BadArchive("the new data dir's event stream is not empty")
            counts = {"events": await append_all(log, read_export(staging.path(bd.EVENTS), log), same_seqs=True)}
            for name, bucket in (("checkpoints", topology.checkpoint_bucket), ("maps", topology.map_bucket)):
                counts[name] = await _put_objects(log.js, bucket, _lines(staging.path(bd.object_list(name))), staging)
            counts["snapshot_keys"] = await _put_snapshots(await log.js.key_value(topology.snapshot_bucket),
                                                           _lines(staging.path(bd.SNAPSHOTS)))
            await nc.flush(timeout=10)
        finally:
            await nc.close()
    finally:
        node.stop()
    return counts


async def _put_objects(js: JetStreamContext, bucket: str, lines: list[dict[str, Any]], staging: Staging) -> int:
    store = await js.object_store(bucket)
    for line in lines:
        meta = ObjectMeta(name=line["name"], description=line.get("description"), headers=line.get("headers"))
        with staging.path(line["member"]).open("rb") as source:
            info = await store.put(line["name"], source, meta=meta)
        if line.get("digest") and info.digest != line["digest"]:
            raise bd.BadArchive(f"object {line['name']} of {bucket} was stored with digest {info.digest}, "
                                f"not {line['digest']}")
    return len(lines)


async def _put_snapshots(kv: KeyValue, lines: list[dict[str, Any]]) -> int:
    for line in lines:
        await kv.put(line["key"], base64.b64decode(line["value"]))
    return len(lines)


def count_members(staging: Staging, manifest: bd.Manifest) -> None:
    """The counts inside the members against the manifest's; BadArchive when they differ."""
    events = sum(1 for line in staging.path(bd.EVENTS).read_bytes().splitlines() if line.strip())
    objects = {name: len(_lines(staging.path(bd.object_list(name)))) for name in manifest.buckets}
    problems = bd.count_problems(manifest, events, objects, len(_lines(staging.path(bd.SNAPSHOTS))))
    if problems:
        raise bd.BadArchive("the archive's contents do not match its manifest: " + "; ".join(problems))


def move_aside(data: Path) -> Path:
    """`--force`: the data dir as it was goes to a sibling folder (nothing is deleted); the new one is empty."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    aside = data.with_name(f"{data.name}.replaced-{stamp}")
    try:
        os.rename(data, aside)
    except OSError as exc:
        raise bd.BadArchive(f"cannot move {data} aside to {aside} ({exc.strerror}); empty it yourself") from None
    data.mkdir(mode=0o700)
    return aside


def restore(archive: Path, data: Path, prefix: str, replicas: int, force: bool, run: Any) -> dict[str, Any]:
    """The whole restore into `data` (`run` runs a coroutine to its end): what was put back, and where."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = DataDirLock(data)
    lock.acquire({"pid": os.getpid(), "state": "restoring"}, wait_s=0.0)
    aside = None
    try:
        blocking = bd.in_the_way(p.name for p in data.iterdir())
        if blocking and not force:
            raise bd.BadArchive(f"{data} is not empty ({', '.join(blocking[:5])}…): restore into an empty data "
                                "dir (--data-dir), or pass --force to move what is there aside")
        if blocking:
            lock.release()
            aside = move_aside(data)
            lock = DataDirLock(data)
            lock.acquire({"pid": os.getpid(), "state": "restoring"}, wait_s=0.0)
        root = Path(tempfile.mkdtemp(prefix=".restoring-", dir=data))
        try:
            staging = Staging(root)
            manifest = unpack(archive, staging)
            count_members(staging, manifest)
            put_identity(staging, data)
            worker = choose_local_worker(data, CredentialStore(data))
            if manifest.settings:
                (data / "stoker.toml").write_bytes(staging.path(bd.SETTINGS).read_bytes())
            counts = run(load_platform(staging, data, prefix, replicas))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    finally:
        lock.release()
    return {**counts, "data_dir": str(data), "local_worker": worker, "moved_aside": str(aside) if aside else None,
            "settings": str(data / "stoker.toml") if manifest.settings else None, "manifest": bd.summary(manifest)}

