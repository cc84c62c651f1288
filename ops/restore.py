"""`stoker restore`: a backup archive back into an empty data dir (layout: ops/backup_domain.py).

Every member is checked against the manifest before anything is written; then the identity files go back,
the embedded nats-server is started on the new data dir, and the events are appended as the admin with their
original ids and headers at their original sequences, followed by the objects and the snapshots.
"""

from __future__ import annotations

import base64
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
from nats.js.kv import KeyValue

from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.credentials import WORKER_ID_FILE, CredentialStore, derived_worker_id
from eventstore.log import JetStreamLog
from eventstore.server import embedded_node, free_port
from ops import backup_domain as bd
from ops.backup import CHUNK, Staging
from ops.eventfile import append_all, read_export
from ops.lock import DataDirLock


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

