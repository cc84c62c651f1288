"""`stoker events …`, `stoker replay` and `stoker contracts schema` against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from contracts.base import new_id
from tests.integration.test_projections import submit_and_run


def stoker(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "ops", *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[2])
    if check:
        assert result.returncode == 0, result.stderr
    return result


def env_for(nats_server, topology, tmp_path: Path) -> dict[str, str]:
    return {"STOKER_NATS_URL": nats_server.url, "STOKER_PREFIX": topology.prefix,
            "STOKER_DATA_DIR": str(tmp_path / "data")}


async def test_tail_show_export_import(event_log, nats_server, topology, tmp_path, nc) -> None:
    job = new_id()
    await submit_and_run(event_log, job)
    await nc.publish(topology.events("job", "junk"), b"not json")
    await nc.flush()
    env = env_for(nats_server, topology, tmp_path)
    text = await asyncio.to_thread(stoker, ["events", "tail"], env)
    assert "JobSubmitted" in text.stdout and f"job/{job}" in text.stdout
    lines = (await asyncio.to_thread(stoker, ["events", "tail", "--json", "--id", job], env)).stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["JobSubmitted", "JobAssigned", "JobStarted",
                                                            "JobCheckpointed", "JobCompleted"]
    nothing = await asyncio.to_thread(stoker, ["events", "tail", "--id", "NoSuchJob"], env)
    assert nothing.stdout == ""  # a filter that matches nothing answers at once instead of waiting
    shown = json.loads((await asyncio.to_thread(stoker, ["events", "show", "6"], env)).stdout)
    assert shown["raw"] == "not json" and "unknown event type" in shown["malformed"]
    missing = await asyncio.to_thread(stoker, ["events", "show", "999"], env, False)
    assert missing.returncode != 0 and "no event with sequence 999" in missing.stderr

    export = tmp_path / "log.jsonl"
    await asyncio.to_thread(stoker, ["events", "export", str(export)], env)
    assert len(export.read_text().splitlines()) == 6
    refused = await asyncio.to_thread(stoker, ["events", "import", str(export)], env, False)
    assert refused.returncode != 0 and "already holds 6 events" in refused.stderr

    other = {**env, "STOKER_PREFIX": f"{topology.prefix}x"}
    await asyncio.to_thread(stoker, ["events", "import", str(export)], other)
    copied = [json.loads(line) for line in (await asyncio.to_thread(stoker, ["events", "tail", "--json"],
                                                                     other)).stdout.splitlines()]
    originals = [json.loads(line) for line in export.read_text().splitlines()]
    assert [c["event_id"] for c in copied[:5]] == [o["headers"]["Nats-Msg-Id"] for o in originals[:5]]
    assert "unknown event type" in copied[5]["malformed"]  # the junk travels too, and is shown as such


async def test_import_checks_the_whole_file_first(nats_server, topology, tmp_path, event_log) -> None:
    bad = tmp_path / "bad.jsonl"
    line = json.dumps({"seq": 1, "subject": topology.events("job", "a"), "headers": {}, "data": {}})
    bad.write_text(line + "\n{oops\n")
    env = env_for(nats_server, topology, tmp_path)
    result = await asyncio.to_thread(stoker, ["events", "import", str(bad)], env, False)
    assert result.returncode != 0 and "bad.jsonl:2: not an export line" in result.stderr
    assert await event_log.last_seq() == 0


async def test_replay_command_and_schema(event_log, nats_server, topology, tmp_path) -> None:
    await submit_and_run(event_log, new_id())
    env = env_for(nats_server, topology, tmp_path)
    result = await asyncio.to_thread(stoker, ["replay", "--all"], env)
    assert "jobs: rebuilt up to event 5" in result.stdout
    unknown = await asyncio.to_thread(stoker, ["replay", "nope"], env, False)
    assert unknown.returncode != 0 and "unknown projection 'nope'" in unknown.stderr
    schema = json.loads((await asyncio.to_thread(stoker, ["contracts", "schema"], env)).stdout)
    assert {"JobSubmitted", "WorkerRegistered", "SubmitJob", "JobProgress"} <= set(schema["$defs"])
    assert schema["x-stoker-event-schema-versions"]["JobSubmitted"] == 2


async def test_unreachable_nats_is_one_clear_line(tmp_path) -> None:
    from eventstore.server import free_port

    env = {"STOKER_NATS_URL": f"nats://127.0.0.1:{free_port()}", "STOKER_DATA_DIR": str(tmp_path)}
    result = await asyncio.to_thread(stoker, ["events", "tail"], env, False)
    assert result.returncode == 1
    assert result.stderr.startswith("stoker: cannot reach NATS") and "Traceback" not in result.stderr
