"""Event store benchmark: append vs raw JetStream publish, projection rebuild vs raw ordered read.

Run: `make bench` or `python bench/eventstore.py [--events 100000] [--concurrency 32] [--auth] [--tls]`.
`--auth`: the server has the platform's users (eventstore/credentials.py) and the bench connects as the
admin, which creates the streams (its allow list is `>`, so this measures the authenticated connection, not
long permission lists); `--tls`: NATS speaks only TLS under a CA made for the run, pinned by the bench.
Prints one JSON line per figure; each ratio compares stoker with plain nats-py measured in the same
run, on the same server and the same payloads. Targets: append ratio >= 0.9, rebuild ratio >= 0.8 (SQLite)
and >= 0.5 (PostgreSQL); the replay case (`--replay-events`, 1,000,000 by default, 0 to skip) projects a
log of that many events into a fresh SQLite file, target under 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts import events as ev
from contracts.base import utcnow, uuid7
from contracts.codec import encode
from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.credentials import CredentialStore
from eventstore.log import JetStreamLog, event_headers
from eventstore.pki import LOOPBACK_NAMES, ensure_server_tls
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections
from eventstore.server import NatsServer, ServerSpec, free_port
from eventstore.stores.sqlite import SqliteStore

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROUNDS = 10


def job_life(job_id: str) -> list[ev.Event]:
    """Five events of a typical job: the payload mix of a real log."""
    now = utcnow()
    return [
        ev.JobSubmitted(job_id=job_id, kind="train", workload="2048", params={"lr": 0.0005},
                        max_iterations=20000, labels=("training",), submitted_at=now),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id="worker-1", assigned_at=now),
        ev.JobStarted(job_id=job_id, attempt=1, worker_id="worker-1", started_at=now),
        ev.JobCheckpointed(job_id=job_id, attempt=1, iteration=500, name=f"{job_id}/1-500", sha256="a" * 64,
                           size=1_600_000, checkpointed_at=now),
        ev.JobCompleted(job_id=job_id, attempt=1, result={"score": 4100.0}, completed_at=now),
    ]


def workload(count: int) -> list[tuple[str, ev.Event]]:
    """`count` events spread over count/5 jobs, in job order."""
    return workload_from(0, count)


async def run_concurrently(items: list, concurrency: int, fn) -> float:
    """Run `fn(item)` over items with `concurrency` workers; returns seconds taken."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await fn(item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def bench_append(nc, events: list[tuple[str, ev.Event]], concurrency: int) -> dict:
    """stoker append (one event per call, unguarded) against js.publish of the same bytes and headers."""
    raw_topology, log_topology = Topology(f"raw{secrets.token_hex(3)}"), Topology(f"log{secrets.token_hex(3)}")
    raw_log, log = JetStreamLog(nc, raw_topology), JetStreamLog(nc, log_topology)
    await raw_log.ensure_streams()
    await log.ensure_streams()
    js = nc.jetstream()
    prepared = [(raw_topology.events(a, e.aggregate_id), encode(e), event_headers(e, uuid7(), None, None))
                for a, e in events]

    async def raw(item) -> None:
        await js.publish(item[0], item[1], headers=item[2])

    async def append(item) -> None:
        await log.append(item[0], item[1].aggregate_id, [item[1]])

    # Interleave rounds (alternating which goes first) so a noisy, shared machine hits both alike.
    raw_s = log_s = 0.0
    step = max(1, len(events) // ROUNDS)
    for round_no, start in enumerate(range(0, len(events), step)):
        pair = [(prepared[start:start + step], raw, "raw"), (events[start:start + step], append, "log")]
        for items, fn, name in pair if round_no % 2 == 0 else reversed(pair):
            taken = await run_concurrently(items, concurrency, fn)
            raw_s, log_s = (raw_s + taken, log_s) if name == "raw" else (raw_s, log_s + taken)
    raw_rate, log_rate = len(events) / raw_s, len(events) / log_s
    return {"bench": "append", "events": len(events), "concurrency": concurrency,
            "events_per_s": round(log_rate), "raw_publish_per_s": round(raw_rate),
            "ratio": round(log_rate / raw_rate, 3)}, log


async def raw_read_rate(log: JetStreamLog) -> float:
    """Plain ordered-consumer read of the whole stream, messages per second."""
    start, count = time.perf_counter(), 0
    async for _msg in log.read_raw(1):
        count += 1
    return count / (time.perf_counter() - start)


async def bench_rebuild(log: JetStreamLog, store, store_name: str) -> dict:
    """Projection rebuild (jobs + workers) from sequence 1 into `store`, against a raw read."""
    before = await raw_read_rate(log)
    runner = ProjectionRunner(log, store, all_projections(), batch_size=2000)
    await runner.prepare()
    total = await log.last_seq()
    start = time.perf_counter()
    await runner.catch_up()
    rate = total / (time.perf_counter() - start)
    raw = (before + await raw_read_rate(log)) / 2  # measured before and after, against machine noise
    return {"bench": "rebuild", "store": store_name, "events": total, "events_per_s": round(rate),
            "raw_read_per_s": round(raw), "ratio": round(rate / raw, 3)}


async def bench_replay(nc, count: int, concurrency: int, path: Path) -> dict:
    """A log of `count` events (published raw, as fast as the server takes them) replayed into a new SQLite file."""
    topology = Topology(f"replay{secrets.token_hex(3)}")
    log = JetStreamLog(nc, topology)
    await log.ensure_streams()
    js = nc.jetstream()
    step = 50_000  # payloads made per slice: a million events' bytes need not sit in memory at once
    for start in range(0, count, step):
        prepared = [(topology.events(a, e.aggregate_id), encode(e), event_headers(e, uuid7(), None, None))
                    for a, e in workload_from(start, min(step, count - start))]
        await run_concurrently(prepared, concurrency, lambda item: js.publish(item[0], item[1], headers=item[2]))
    raw = await raw_read_rate(log)
    store = await SqliteStore.open(path)
    runner = ProjectionRunner(log, store, all_projections(), batch_size=2000)
    began = time.perf_counter()
    await runner.catch_up()
    seconds = time.perf_counter() - began
    await store.close()
    return {"bench": "replay", "store": "sqlite", "events": count, "seconds": round(seconds, 2),
            "events_per_s": round(count / seconds), "raw_read_per_s": round(raw),
            "ratio": round(count / seconds / raw, 3), "target_s": 20}


def workload_from(first: int, count: int) -> list[tuple[str, ev.Event]]:
    """`count` events of jobs numbered from `first // 5` on (as `workload`, shifted)."""
    out = []
    for index in range(first // 5, (first + count) // 5):
        out.extend(("job", e) for e in job_life(f"J{index:08d}"))
    return out


async def postgres_store():
    """A PostgreSQL store in a fresh schema, or None when no server answers."""
    try:
        import asyncpg

        from eventstore.stores.postgres import PostgresStore

        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
        await conn.close()
    except (OSError, Exception):
        return None
    return await PostgresStore.open(POSTGRES_URL, schema=f"bench{secrets.token_hex(3)}")


async def main(events: int, concurrency: int, replay: int, auth: bool = False, tls: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        credentials, admin = None, None
        if auth:
            credentials = CredentialStore(Path(tmp))
            admin = credentials.ensure_control_plane()["admin"]
            credentials.write_authorization(Topology("bench"))
        server_tls = ensure_server_tls(Path(tmp), LOOPBACK_NAMES) if tls else None
        spec = ServerSpec(store_dir=Path(tmp) / "js", port=free_port(), http_port=free_port(), name="bench",
                          tls=server_tls, auth_file=credentials.authorization_path if credentials else None)
        server = await NatsServer(spec).start()
        nc = await connect(server.url, "bench", credentials=admin,
                           ca_file=str(server_tls.ca_file) if server_tls else None)
        try:
            result, log = await bench_append(nc, workload(events), concurrency)
            result |= {"auth": auth, "tls": tls}
            print(json.dumps(result), flush=True)
            sqlite = await SqliteStore.open(Path(tmp) / "bench.sqlite3")
            print(json.dumps(await bench_rebuild(log, sqlite, "sqlite")), flush=True)
            await sqlite.close()
            pg = await postgres_store()
            if pg is not None:
                print(json.dumps(await bench_rebuild(log, pg, "postgres")), flush=True)
                await pg.fetchall(f'DROP SCHEMA "{pg.schema}" CASCADE')
                await pg.close()
            if replay:
                print(json.dumps(await bench_replay(nc, replay, concurrency * 8, Path(tmp) / "replay.sqlite3")),
                      flush=True)
        finally:
            await nc.close()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--auth", action="store_true", help="the platform's users; the bench connects as admin")
    parser.add_argument("--tls", action="store_true", help="NATS only over TLS, the CA pinned")
    parser.add_argument("--replay-events", type=int, default=1_000_000, help="events of the replay case (0: skip)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.concurrency, args.replay_events, args.auth, args.tls))
