"""Contracts: round trips, golden payloads of every schema version, upcasters, bad input."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from contracts import events as ev
from contracts.base import is_valid_id, new_id, uuid7
from contracts.codec import MalformedEvent, decode_event, encode
from contracts.commands import RegisterWorker, SubmitJob
from contracts.subjects import Topology
from contracts.upcasters import UPCASTERS, upcast

GOLDEN = Path(__file__).parent / "golden"


def golden_files() -> list[Path]:
    return sorted(GOLDEN.glob("*.json"))


def parse_name(path: Path) -> tuple[str, int]:
    name, version = path.stem.split(".v")
    return name, int(version)


def test_every_event_type_has_a_golden_payload_at_its_current_version() -> None:
    present = {parse_name(p) for p in golden_files()}
    for name, cls in ev.EVENT_TYPES.items():
        assert (name, cls.schema) in present, f"tests/unit/golden/{name}.v{cls.schema}.json is missing"


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.stem)
def test_golden_payload_decodes(path: Path) -> None:
    name, version = parse_name(path)
    event = decode_event(name, version, path.read_bytes())
    assert type(event).__name__ == name
    if version == event.schema:
        # The current version round-trips byte for byte (modulo whitespace).
        assert json.loads(encode(event)) == json.loads(path.read_text())


def test_job_submitted_v1_upcasts_to_the_v2_meaning() -> None:
    old = decode_event("JobSubmitted", 1, (GOLDEN / "JobSubmitted.v1.json").read_bytes())
    new = decode_event("JobSubmitted", 2, (GOLDEN / "JobSubmitted.v2.json").read_bytes())
    assert old == msgspec.structs.replace(new, traceparent="")  # v1 predates trace context
    assert old.kind == "train" and old.max_iterations == 20000


def test_job_submitted_from_before_per_job_stall_settings_still_decodes() -> None:
    payload = json.loads((GOLDEN / "JobSubmitted.v2.json").read_text())
    del payload["stall_after_s"], payload["on_stall"]
    event = decode_event("JobSubmitted", 2, json.dumps(payload).encode())
    assert (event.stall_after_s, event.on_stall) == (None, "alert")


def test_job_submitted_without_a_traceparent_still_decodes() -> None:
    payload = json.loads((GOLDEN / "JobSubmitted.v2.json").read_text())
    del payload["traceparent"]
    assert decode_event("JobSubmitted", 2, json.dumps(payload).encode()).traceparent == ""


def test_job_submitted_before_maps_still_decodes() -> None:
    payload = json.loads((GOLDEN / "JobSubmitted.v2.json").read_text())
    del payload["map_id"], payload["map_sha256"], payload["map_filename"], payload["action_combinations"]
    event = decode_event("JobSubmitted", 2, json.dumps(payload).encode())
    assert event.map_id is None and event.action_combinations is None
    payload.update(map_id=7, action_combinations="left+fire")
    event = decode_event("JobSubmitted", 2, json.dumps(payload).encode())
    assert (event.map_id, event.action_combinations) == (7, "left+fire")


def test_upcaster_chain_names_a_missing_step() -> None:
    with pytest.raises(KeyError, match="no upcaster for JobAssigned from schema 1"):
        upcast("JobAssigned", 1, 2, {})
    assert ("JobSubmitted", 1) in UPCASTERS


def test_upcaster_is_pure() -> None:
    payload = {"type": "JobSubmitted", "iterations": 3}
    lifted = upcast("JobSubmitted", 1, 2, payload)
    assert payload == {"type": "JobSubmitted", "iterations": 3}
    assert lifted["max_iterations"] == 3 and "iterations" not in lifted


@pytest.mark.parametrize(("event_type", "schema", "data", "message"), [
    ("NoSuchEvent", "1", b"{}", "unknown event type 'NoSuchEvent'"),
    (None, "1", b"{}", "unknown event type None"),
    ("JobAssigned", "7", b"{}", "schema 7 is newer"),
    ("JobAssigned", "x", b"{}", "is not a number"),
    ("JobAssigned", "0", b"{}", "invalid"),
    ("JobAssigned", "1", b'{"type": "JobAssigned", "job_id": "a"', "truncated"),
    ("JobAssigned", "1", b'{"type": "JobAssigned", "job_id": "a", "attempt": "one", "worker_id": "w",'
                          b' "assigned_at": "2026-01-01T00:00:00Z"}', "$.attempt"),
    ("JobAssigned", "1", b'{"type": "JobAssigned", "job_id": "a b", "attempt": 1, "worker_id": "w",'
                          b' "assigned_at": "2026-01-01T00:00:00Z"}', "$.job_id"),
    ("JobSubmitted", "1", b"[1, 2]", "not a JSON object"),
])
def test_malformed_events_say_what_is_wrong(event_type, schema, data, message) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode_event(event_type, schema, data)
    assert message.lower() in str(info.value).lower()


def test_commands_reject_absurd_values() -> None:
    with pytest.raises(msgspec.ValidationError, match="max_iterations"):
        msgspec.json.decode(b'{"type": "SubmitJob", "workload": "2048", "max_iterations": -5}', type=SubmitJob)
    with pytest.raises(msgspec.ValidationError, match="cpu_cores"):
        msgspec.json.decode(b'{"type": "RegisterWorker", "worker_id": "w1", "capabilities":'
                            b' {"hostname": "h", "cpu_cores": 0, "ram_mb": 1}}', type=RegisterWorker)


def test_ids() -> None:
    first, second = new_id(), new_id()
    assert len(first) == 26 and is_valid_id(first)
    time.sleep(0.002)
    assert new_id() > first and first != second
    value = uuid7()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", value)
    parsed = uuid.UUID(value)
    assert str(parsed) == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time_ns() // 1_000_000) < 60_000  # its first 48 bits: Unix milliseconds
    assert len({uuid7() for _ in range(10_000)}) == 10_000
    assert not is_valid_id("a.b") and not is_valid_id("") and not is_valid_id("x" * 65)


def test_topology_names() -> None:
    topology = Topology()
    assert topology.events_stream == "STOKER_EVENTS"
    assert topology.events("job", "01J") == "stoker.events.job.01J"
    assert topology.command("scheduler", "submit") == "stoker.cmd.scheduler.submit"
    assert topology.parse_event_subject("stoker.events.job.01J") == ("job", "01J")
    assert topology.parse_event_subject("stoker.telemetry.progress.01J") is None
    with pytest.raises(ValueError, match="prefix"):
        Topology("Bad.Prefix")
