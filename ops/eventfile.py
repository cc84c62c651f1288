"""The event log as a file: one JSON line per stored message, with its subject and headers, in stream order.

`stoker events export|import` and `stoker backup|restore` write and read it; an import appends every message
with its original id and headers, so that replaying the copy gives the same state as the original.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from eventstore.log import EXPECTED_SUBJECT_SEQ, JetStreamLog

# Headers of how a message was appended, not of what it says: an import appends each message on its own.
TRANSIENT_HEADERS = (EXPECTED_SUBJECT_SEQ, "Nats-Batch-Id", "Nats-Batch-Sequence", "Nats-Batch-Commit")
Message = tuple[str, bytes, dict[str, str]]


class BadEventFile(ValueError):
    """A line of an export file that cannot be imported; the message names the file and line."""


def export_record(msg: Any) -> dict[str, Any]:
    """One stored message as an export line; payloads that are not JSON travel as base64."""
    record: dict[str, Any] = {"seq": msg.metadata.sequence.stream, "subject": msg.subject,
                              "headers": dict(msg.headers or {})}
    try:
        record["data"] = msgspec.json.decode(msg.data)
    except msgspec.DecodeError:
        record["data_b64"] = base64.b64encode(msg.data).decode()
    return record


async def write_events(log: JetStreamLog, out: IO[str]) -> tuple[int, int, int]:
    """Every message of the event log as of now (malformed ones too) into `out`: (count, first seq, last seq)."""
    count = first = last = 0
    async for msg in log.read_raw(1):
        seq = msg.metadata.sequence.stream
        out.write(msgspec.json.encode(export_record(msg)).decode() + "\n")
        count, first, last = count + 1, first or seq, seq
    return count, first, last


def read_export(path: Path, log: JetStreamLog) -> list[tuple[int, Message]]:
    """Parse and check a whole export file before anything is written: (original seq, message) per line."""
    messages = []
    with path.open() as source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                record = msgspec.json.decode(line)
                subject, headers = record["subject"], dict(record.get("headers") or {})
                data = base64.b64decode(record["data_b64"]) if "data_b64" in record \
                    else msgspec.json.encode(record["data"])
                seq = int(record.get("seq") or 0)
            except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
                raise BadEventFile(f"{path}:{number}: not an export line ({exc})") from None
            parts = str(subject).split(".")
            if len(parts) != 4 or parts[1] != "events":
                raise BadEventFile(f"{path}:{number}: {subject!r} is not an event subject")
            for transient in TRANSIENT_HEADERS:
                headers.pop(transient, None)
            # An export from another prefix lands under this installation's prefix.
            target = log.topology.events(parts[2], parts[3])
            messages.append((seq, (target, data, {k: str(v) for k, v in headers.items()})))
    return messages


async def append_all(log: JetStreamLog, messages: Sequence[tuple[int, Message]], same_seqs: bool = False) -> int:
    """Append the messages in order; with `same_seqs` each must land at its original sequence (a restore into
    an empty stream: snapshots and checkpoints that name sequences stay true). Returns how many."""
    for original, (subject, data, headers) in messages:
        seq = await log.append_raw(subject, data, headers)
        if same_seqs and seq != original:
            raise BadEventFile(f"the event of sequence {original} landed at {seq} (a duplicate event id within "
                               "the stream's dedup window?); the restored log would not replay the same")
    return len(messages)
