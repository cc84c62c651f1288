"""A backup archive's layout and manifest, and the decisions around a restore: pure (ops/backup.py does the I/O).

The archive (a gzipped tar, 0600: it holds the platform's credentials) contains:

    manifest.json              what is inside: counts, and the size and SHA-256 of every other member
    events.jsonl               the event log, in order, one message per line with its headers (`stoker events export`)
    objects/<bucket>.jsonl     one line per object of the checkpoint and map buckets: name, description, headers, digest
    objects/<bucket>/<n>.bin   each object's bytes
    kv/snapshots.jsonl         the snapshot bucket's keys and values (base64): a restore need not replay from 0
    settings/stoker.toml       the settings file in use, when there is one
    files/<path>               the data dir's identity: credentials/, tls/ (the CA), admin.token, platform-id

Read models are not in it: a restored platform rebuilds them from the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

FORMAT = "stoker-backup"
VERSION = 1
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
SNAPSHOTS = "kv/snapshots.jsonl"
SETTINGS = "settings/stoker.toml"
FILES = "files/"
# What of a data dir makes it this platform (and not another one): carried into the archive and back.
IDENTITY_PATHS = ("credentials", "tls", "admin.token", "platform-id")
# What a data dir may hold and still count as empty for a restore (what `stoker doctor --fix` or a failed
# start leaves behind, and the lock file a restore itself takes).
EMPTY_ENOUGH = {"logs", "stoker.lock", "supervisor.json"}


class BadArchive(ValueError):
    """The archive is not a stoker backup, or does not match its manifest; the message says what is wrong."""


class Member(msgspec.Struct, frozen=True):
    """One member of the archive as the manifest records it."""

    size: int
    sha256: str


class Part(msgspec.Struct, frozen=True, kw_only=True):
    """How many things of one kind the archive holds (events, objects of a bucket, snapshot keys)."""

    count: int
    bytes: int = 0
    first_seq: int = 0  # events only: the stream sequences, which a restore reproduces exactly
    last_seq: int = 0


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a backup holds; `stoker restore` checks every member against it before it writes anything."""

    format: str = FORMAT
    version: int = VERSION
    created_at: str
    stoker_version: str
    prefix: str
    source: str  # the NATS server the backup was read from
    events: Part
    buckets: dict[str, Part]  # "checkpoints", "maps"
    snapshots: Part
    settings: bool
    secrets: bool  # the credentials and the CA are inside: keep the archive as private as the data dir
    members: dict[str, Member]


def object_list(bucket: str) -> str:
    """The member listing one bucket's objects."""
    return f"objects/{bucket}.jsonl"


def object_member(bucket: str, index: int) -> str:
    """The member holding one object's bytes."""
    return f"objects/{bucket}/{index}.bin"


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest as stored (indented JSON: a person may read it with `tar xOf FILE manifest.json`)."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2)


def decode_manifest(data: bytes) -> Manifest:
    """The manifest of an archive; BadArchive when it is not one this stoker reads."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadArchive(f"its manifest is not JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BadArchive("it is not a stoker backup (no stoker-backup manifest)")
    if raw.get("version") != VERSION:
        raise BadArchive(f"it is a backup of format version {raw.get('version')}; this stoker reads version {VERSION}")
    try:
        return msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise BadArchive(f"its manifest is damaged ({exc})") from None


def member_problems(manifest: Manifest, found: Mapping[str, Member]) -> list[str]:
    """Every difference between the members the manifest lists and those found (with their digests)."""
    problems = [f"{name} is missing" for name in sorted(set(manifest.members) - set(found))]
    problems += [f"{name} is not in the manifest" for name in sorted(set(found) - set(manifest.members))]
    for name in sorted(set(manifest.members) & set(found)):
        want, got = manifest.members[name], found[name]
        if want.sha256 != got.sha256 or want.size != got.size:
            problems.append(f"{name} differs (SHA-256 {got.sha256[:12]}…, {got.size} bytes; "
                            f"the manifest says {want.sha256[:12]}…, {want.size} bytes)")
    return problems


def count_problems(manifest: Manifest, events: int, objects: Mapping[str, int], snapshots: int) -> list[str]:
    """Counts in the members that differ from the manifest's."""
    problems = []
    if events != manifest.events.count:
        problems.append(f"{EVENTS} holds {events} events, the manifest says {manifest.events.count}")
    for bucket, part in manifest.buckets.items():
        if objects.get(bucket, 0) != part.count:
            problems.append(f"{object_list(bucket)} lists {objects.get(bucket, 0)} objects, the manifest says "
                            f"{part.count}")
    if snapshots != manifest.snapshots.count:
        problems.append(f"{SNAPSHOTS} holds {snapshots} keys, the manifest says {manifest.snapshots.count}")
    return problems


def in_the_way(entries: Iterable[str]) -> list[str]:
    """What in a data dir keeps a restore from starting there (it is not a fresh one)."""
    return sorted(name for name in entries if name not in EMPTY_ENOUGH)


def identity_member(relative: str) -> str | None:
    """The archive member for a file of the data dir, when it is part of the platform's identity."""
    top = relative.split("/", 1)[0]
    return FILES + relative if top in IDENTITY_PATHS else None


def restored_path(member: str) -> str:
    """Where an identity member goes back in the data dir; BadArchive for a name that would leave it."""
    relative = member[len(FILES):]
    parts = relative.split("/")
    if not relative or relative.startswith("/") or ".." in parts or parts[0] not in IDENTITY_PATHS:
        raise BadArchive(f"member {member!r} would be written outside the data dir's identity files")
    return relative


def summary(manifest: Manifest) -> dict[str, Any]:
    """The counts a person (or a script) is told after a backup or a restore."""
    return {"events": manifest.events.count, "first_seq": manifest.events.first_seq,
            "last_seq": manifest.events.last_seq,
            **{bucket: part.count for bucket, part in manifest.buckets.items()},
            "snapshot_keys": manifest.snapshots.count, "settings": manifest.settings, "secrets": manifest.secrets}


def fresh_worker_id(derived: str, earlier: Iterable[str], suffix: str) -> str:
    """The restored platform's local worker id: the derived one, unless a worker of the backup had it.

    A worker of the backup ran attempts the restored platform cannot hand back to it (its assignments were
    in the old dispatch queue); under a new id the old one goes silent, is declared lost, and its jobs are
    requeued from their last checkpoint, as after any lost worker.
    """
    return derived if derived not in set(earlier) else f"{derived}-{suffix}"
