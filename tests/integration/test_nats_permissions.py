"""Every permission rule against a real nats-server with the platform's users: the wrong identity is refused
by the server (a permissions violation, nothing stored, nothing changed), the right one is let through."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.js.api import StreamConfig

from contracts.base import new_id, utcnow
from contracts.codec import encode
from contracts.commands import ReportAccepted
from contracts.dispatch import CheckpointRef
from contracts.subjects import Topology
from contracts.telemetry import JobProgress
from eventstore.connect import NatsRefused, connect, credential_options
from eventstore.credentials import public_key, read_seed
from eventstore.log import JetStreamLog
from eventstore.permissions import inbox_prefix, kv_key
from eventstore.server import NatsServer, ServerSpec, free_port, reload_nats
from eventstore.telemetry import last_job_samples
from ops.joining import new_user_seed
from services.trainer.blobstore import CheckpointStore
from services.trainer.consumer import DispatchConsumer
from tests.secured import Probe, SecuredServer, start_secured

TOPOLOGY = Topology("tperm")
T = TOPOLOGY
NON_ADMIN = ("scheduler", "discovery", "projector", "gateway", "worker")
ALL = ("admin", *NON_ADMIN)


@pytest_asyncio.fixture(scope="module")
async def secured(tmp_path_factory) -> AsyncIterator[SecuredServer]:
    """The authenticated server, its streams and buckets made by the admin, one event of each kind in the log."""
    running = await start_secured(tmp_path_factory.mktemp("permissions"), TOPOLOGY, workers=("w1", "w2"))
    admin = await running.probe("admin")
    log = JetStreamLog(admin.nc, TOPOLOGY)
    await log.ensure_streams()
    for aggregate in ("job", "worker", "token"):
        await admin.nc.jetstream().publish(T.events(aggregate, "seed"), b"{}")
    yield running
    await running.close()
    running.server.stop()


@pytest_asyncio.fixture
async def admin(secured: SecuredServer) -> Probe:
    return await secured.probe("admin")


async def as_(secured: SecuredServer, role: str, worker_id: str = "w1") -> Probe:
    return await secured.probe(role, worker_id if role == "worker" else None)  # type: ignore[arg-type]


async def messages(admin: Probe, stream: str, subject: str | None = None) -> int:
    info = await admin.nc.jetstream().stream_info(stream, subjects_filter=subject)
    if subject is None:
        return int(info.state.messages)
    return sum((info.state.subjects or {}).values())


# Events: one writer per aggregate.

@pytest.mark.parametrize("aggregate,writers", [("job", {"scheduler"}), ("worker", {"discovery"}),
                                               ("token", {"gateway"}), ("credential", set())])
@pytest.mark.parametrize("role", ALL)
async def test_only_the_writer_of_an_aggregate_appends_its_events(secured, admin, role, aggregate, writers) -> None:
    probe = await as_(secured, role)
    subject = T.events(aggregate, new_id())
    if role in writers or role == "admin":
        ack = await probe.nc.jetstream().publish(subject, b"{}")
        assert ack.stream == T.events_stream
    else:
        assert await probe.publish_refused(subject), probe.errors
        assert await messages(admin, T.events_stream, subject) == 0


# JetStream management: the admin's alone.

MANAGEMENT_REQUESTS = [
    ("STREAM.UPDATE", T.events_stream, {"name": T.events_stream, "subjects": [T.all_events], "max_msgs": 5,
                                        "discard": "old"}),
    ("STREAM.DELETE", T.events_stream, {}),
    ("STREAM.PURGE", T.events_stream, {}),
    ("STREAM.MSG.DELETE", T.events_stream, {"seq": 1}),
    ("STREAM.DELETE", f"KV_{T.lease_bucket}", {}),
    ("STREAM.PURGE", f"OBJ_{T.checkpoint_bucket}", {}),
    ("STREAM.DELETE", T.dispatch_stream, {}),
    ("STREAM.CREATE", "EVIL", {"name": "EVIL", "subjects": ["evil.>"]}),
    ("STREAM.CREATE", "KV_evil", {"name": "KV_evil", "subjects": ["$KV.evil.>"]}),
    ("CONSUMER.DELETE", f"{T.dispatch_stream}.worker-w1", {}),
]


@pytest.mark.parametrize("role", NON_ADMIN)
async def test_nobody_but_the_admin_changes_or_deletes_streams_and_buckets(secured, admin, role) -> None:
    before = await messages(admin, T.events_stream)
    probe = await as_(secured, role)
    for verb, target, body in MANAGEMENT_REQUESTS:
        subject = f"$JS.API.{verb}.{target}"
        assert await probe.publish_refused(subject, json.dumps(body).encode(), reply=probe.nc.new_inbox()), subject
    assert await messages(admin, T.events_stream) == before
    info = await admin.nc.jetstream().stream_info(T.events_stream)
    assert info.config.max_msgs == -1 and str(getattr(info.config.discard, "value", info.config.discard)) == "new"
    names = {s.config.name for s in await admin.nc.jetstream().streams_info()}
    assert {T.events_stream, T.dispatch_stream, f"KV_{T.lease_bucket}", f"OBJ_{T.checkpoint_bucket}"} <= names
    assert "EVIL" not in names and "KV_evil" not in names


async def test_the_admin_manages_streams(admin) -> None:
    js = admin.nc.jetstream()
    await js.add_stream(StreamConfig(name="TPERM_SCRATCH", subjects=["tperm_scratch.>"]))
    await js.publish("tperm_scratch.1", b"x")
    assert await js.purge_stream("TPERM_SCRATCH")
    assert await js.delete_stream("TPERM_SCRATCH")


# Leases and snapshots: only their holders write them.

@pytest.mark.parametrize("bucket,key,holder", [(T.lease_bucket, "scheduler", "scheduler"),
                                               (T.lease_bucket, "discovery", "discovery"),
                                               (T.snapshot_bucket, "scheduler", "scheduler"),
                                               (T.snapshot_bucket, "scheduler.a.0", "scheduler")])
@pytest.mark.parametrize("role", NON_ADMIN)
async def test_a_lease_or_snapshot_is_written_only_by_its_holder(secured, admin, role, bucket, key, holder) -> None:
    admin_kv = await admin.nc.jetstream().key_value(bucket)
    revision = await admin_kv.put(key, b"holder")
    probe = await as_(secured, role)
    if role == holder:
        kv = await probe.nc.jetstream().key_value(bucket)
        assert (await kv.get(key)).value == b"holder"  # it reads its own key
        await kv.update(key, b"renewed", last=revision)
        assert (await admin_kv.get(key)).value == b"renewed"
    else:
        assert await probe.publish_refused(kv_key(bucket, key), b"stolen")
        entry = await admin_kv.get(key)
        assert (entry.value, entry.revision) == (b"holder", revision)


async def test_a_holder_reads_no_other_lease(secured, admin) -> None:
    kv = await admin.nc.jetstream().key_value(T.lease_bucket)
    await kv.put("discovery", b"d")
    scheduler = await as_(secured, "scheduler")
    subject = f"$JS.API.DIRECT.GET.KV_{T.lease_bucket}.{kv_key(T.lease_bucket, 'discovery')}"
    assert await scheduler.publish_refused(subject, b"", reply=scheduler.nc.new_inbox())


# Dispatch: the scheduler hands out work; each worker reads only its own queue.

@pytest.mark.parametrize("role", ALL)
async def test_only_the_scheduler_dispatches(secured, admin, role) -> None:
    probe = await as_(secured, role, "w1")
    subject = T.dispatch("w1")
    before = await messages(admin, T.dispatch_stream, subject)
    if role in ("scheduler", "admin"):
        await probe.nc.jetstream().publish(subject, b"{}")
        assert await messages(admin, T.dispatch_stream, subject) == before + 1
    else:
        assert await probe.publish_refused(subject, b'{"type": "Assignment"}')
        assert await messages(admin, T.dispatch_stream, subject) == before


async def test_a_worker_reads_its_own_queue_and_no_other(secured, admin) -> None:
    w1, w2 = await as_(secured, "worker", "w1"), await as_(secured, "worker", "w2")
    received: list[bytes] = []
    got = asyncio.Event()

    async def handle(msg) -> None:
        received.append(msg.data)
        await msg.ack()
        if msg.data == b"for-w1":
            got.set()

    consumer = DispatchConsumer(w1.nc, T, "w1", handle)
    await consumer.ensure()  # the trainer's own code, through its narrow create subject
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await admin.nc.jetstream().publish(T.dispatch("w1"), b"for-w1")
        await asyncio.wait_for(got.wait(), 30)
        assert b"for-w1" in received and not w1.errors
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    stream, theirs = T.dispatch_stream, T.dispatch_consumer("w1")
    body = json.dumps({"stream_name": stream, "config": {"name": "worker-w2", "durable_name": "worker-w2",
                                                         "filter_subject": T.dispatch("w1"),
                                                         "ack_policy": "explicit"}}).encode()
    # Its own create subject with another worker's filter: nats-server refuses the mismatch.
    reply = await w2.nc.request(f"$JS.API.CONSUMER.CREATE.{stream}.worker-w2.{T.dispatch('w2')}", body, timeout=10)
    assert "error" in json.loads(reply.data)
    for subject in (f"$JS.API.CONSUMER.CREATE.{stream}.{theirs}.{T.dispatch('w1')}",
                    f"$JS.API.CONSUMER.CREATE.{stream}.worker-w2.{T.dispatch('w1')}",
                    f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.worker-w2",
                    f"$JS.API.CONSUMER.CREATE.{stream}",
                    f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{theirs}",
                    f"$JS.ACK.{stream}.{theirs}.1.1.1.1.0"):
        assert await w2.publish_refused(subject, body, reply=w2.nc.new_inbox()), subject
    assert await w2.subscribe_refused(T.dispatch("w1"))
    assert await w2.subscribe_refused(T.dispatch(">"))
    assert "worker-w2" not in [c.name for c in await admin.nc.jetstream().consumers_info(stream)]


# A worker publishes only its own telemetry, its own commands and checkpoints.

async def test_a_worker_speaks_only_for_itself(secured, admin) -> None:
    discovery, scheduler = await as_(secured, "discovery"), await as_(secured, "scheduler")
    heard: list[str] = []

    async def record(msg) -> None:
        heard.append(msg.subject)

    for probe, subject in ((discovery, T.telemetry("heartbeat", "*")), (discovery, T.command("discovery", ">")),
                           (scheduler, T.command("scheduler", ">"))):
        await probe.nc.subscribe(subject, cb=record)
        await settled(probe)
    w1 = await as_(secured, "worker", "w1")
    own = [T.telemetry("heartbeat", "w1"), T.command("discovery", "register", "w1"),
           T.command("discovery", "deregister", "w1"), T.command("scheduler", "report", "w1")]
    for subject in own:
        assert not await w1.publish_refused(subject)
    for subject in (T.job_telemetry("progress", "01J", "w1"), T.job_telemetry("episode", "01J", "w1")):
        await w1.nc.jetstream().publish(subject, b"{}")  # stored: telemetry of its jobs, under its own name
    others = [T.job_telemetry("progress", "01J", "w2"), T.job_telemetry("episode", "01J", "w2"),
              T.telemetry("progress", "01J"), T.telemetry("episode", "01J"),  # the old subjects: history only
              T.telemetry("heartbeat", "w2"), T.command("discovery", "register", "w2"),
              T.command("scheduler", "report", "w2"), T.command("scheduler", "submit"),
              T.command("scheduler", "stop"), "$SRV.PING", T.telemetry("metrics", "w1")]
    for subject in others:
        assert await w1.publish_refused(subject), subject
    await _eventually(lambda: set(own) <= set(heard))
    assert not set(others) & set(heard)


async def settled(probe: Probe) -> None:
    """Everything this connection sent has reached the server (see Probe.refused: two round trips)."""
    await probe.refused(asyncio.sleep(0), "")


async def _eventually(check, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_worker_stores_and_reads_checkpoints_and_others_may_not_write_them(secured, tmp_path) -> None:
    w1 = await as_(secured, "worker", "w1")
    store = CheckpointStore(w1.nc.jetstream(), T.checkpoint_bucket)
    source = tmp_path / "ckpt"
    source.write_bytes(b"weights" * 1000)
    digest = await store.upload(source, "job1/1-10", "msgpack", budget_s=30)
    w2 = await as_(secured, "worker", "w2")  # another machine resumes the job: it may read it
    fetched = await CheckpointStore(w2.nc.jetstream(), T.checkpoint_bucket).fetch(
        CheckpointRef(name="job1/1-10", sha256=digest, size=7000, iteration=10), tmp_path / "back")
    assert fetched is not None and fetched.sha256 == digest and not w1.errors and not w2.errors
    for role in ("scheduler", "discovery", "projector", "gateway"):
        probe = await as_(secured, role)
        assert await probe.publish_refused(f"$O.{T.checkpoint_bucket}.C.evil", b"pickle"), role
        assert await probe.publish_refused(f"$O.{T.checkpoint_bucket}.M.ZXZpbA", b"{}"), role


# Commands: only a service listens on its subjects; only those who send a command may.

@pytest.mark.parametrize("role", ALL)
async def test_only_a_service_listens_on_its_command_subjects(secured, role) -> None:
    probe = await as_(secured, role)
    for service in ("scheduler", "discovery", "projector"):
        subject = T.command(service, ">")
        assert await probe.subscribe_refused(subject) == (role not in (service, "admin")), (role, service)


@pytest.mark.parametrize("role,subject,allowed", [
    ("gateway", T.command("scheduler", "submit"), True),
    ("gateway", T.command("scheduler", "stop"), True),
    ("gateway", T.command("discovery", "register", "any"), True),
    ("gateway", T.command("scheduler", "report", "w1"), False),
    ("gateway", T.command("discovery", "deregister", "w1"), False),
    ("projector", T.command("scheduler", "submit"), False),
    ("discovery", T.command("scheduler", "submit"), False),
    ("scheduler", T.command("discovery", "register", "w1"), False),
    ("worker", T.command("scheduler", "submit"), False),
])
async def test_commands_come_only_from_those_who_send_them(secured, role, subject, allowed) -> None:
    probe = await as_(secured, role)
    assert await probe.publish_refused(subject) == (not allowed)


# Replies: own inbox only; a responder answers inboxes only (no confused deputy).

@pytest.mark.parametrize("role", NON_ADMIN)
async def test_each_identity_reads_only_its_own_replies(secured, role) -> None:
    probe = await as_(secured, role)
    mine = inbox_prefix(public_key(read_seed(secured.credential(role, "w1" if role == "worker" else None))))
    theirs = inbox_prefix(public_key(read_seed(secured.credential("gateway" if role != "gateway" else "projector"))))
    assert probe.nc.new_inbox().startswith(f"{mine}.")  # eventstore.connect's options gave it its own inbox
    assert await probe.subscribe_refused("_INBOX.>")
    assert await probe.subscribe_refused(f"{theirs}.>")
    assert not await probe.subscribe_refused(f"{mine}.x")


async def test_a_responder_cannot_be_made_to_publish_where_a_requester_says(secured, admin) -> None:
    scheduler = await as_(secured, "scheduler")
    answered = asyncio.Event()

    async def respond(msg) -> None:
        await msg.respond(encode(ReportAccepted(accepted=True)))
        answered.set()

    await scheduler.nc.subscribe(T.command("scheduler", "report", "*"), cb=respond)
    await settled(scheduler)
    worker = await as_(secured, "worker", "w1")
    subject = T.command("scheduler", "report", "w1")
    reply = await worker.nc.request(subject, b"{}", timeout=10)  # an inbox: answered
    assert reply.data
    answered.clear()
    target = f"$JS.API.STREAM.DELETE.{T.events_stream}"
    await worker.nc.publish(subject, b"{}", reply=target)
    await asyncio.wait_for(answered.wait(), 10)
    await settled(scheduler)
    assert any(f'publish to "{target}"'.lower() in e for e in scheduler.errors)
    assert (await admin.nc.jetstream().stream_info(T.events_stream)).state.messages > 0


# Reading: the log for the control plane, not for workers; core subscriptions for nobody.

@pytest.mark.parametrize("role", ALL)
async def test_the_event_log_is_read_by_the_control_plane_only(secured, role) -> None:
    probe = await as_(secured, role)
    if role == "worker":
        for subject in (f"$JS.API.CONSUMER.CREATE.{T.events_stream}", f"$JS.API.STREAM.INFO.{T.events_stream}",
                        f"$JS.API.DIRECT.GET.{T.events_stream}.{T.events('token', 'seed')}"):
            assert await probe.publish_refused(subject, b"", reply=probe.nc.new_inbox()), subject
        return
    log = JetStreamLog(probe.nc, T)
    seen = [msg.subject async for msg in log.read_raw(1, until_seq=3)]
    assert len(seen) == 3 and not probe.errors


@pytest.mark.parametrize("role", ALL)
async def test_core_subscriptions_to_the_log_dispatch_and_heartbeats(secured, role) -> None:
    probe = await as_(secured, role)
    assert await probe.subscribe_refused(T.events("job", "*")) == (role != "admin")
    assert await probe.subscribe_refused(T.dispatch("w1")) == (role != "admin")
    assert await probe.subscribe_refused(T.telemetry("heartbeat", "*")) == (role not in ("discovery", "admin"))


async def test_telemetry_is_read_by_the_gateway_not_by_the_projector(secured) -> None:
    gateway, projector = await as_(secured, "gateway"), await as_(secured, "projector")
    await JetStreamLog(gateway.nc, T).stream_state(T.telemetry_stream)
    job = new_id()
    sample = JobProgress(job_id=job, attempt=1, worker_id="w1", iteration=3, total=10, at=utcnow())
    await (await as_(secured, "worker")).nc.jetstream().publish(T.job_telemetry("progress", job, "w1"), encode(sample))
    # The job list's batched direct get (one request, replies to the gateway's own inbox).
    assert await last_job_samples(gateway.nc, T, "progress", [(job, ["w1"]), (new_id(), [])], JobProgress) == [
        sample, None]
    assert not gateway.errors
    assert await projector.publish_refused(f"$JS.API.CONSUMER.CREATE.{T.telemetry_stream}", b"",
                                           reply=projector.nc.new_inbox())


# Connecting at all.

async def test_a_client_without_or_with_an_unknown_credential_is_refused(secured, tmp_path: Path) -> None:
    with pytest.raises(NatsRefused, match="requires a credential"):
        await connect(secured.server.url, "stranger", reconnect=False)
    from eventstore.credentials import new_seed, write_secret

    unknown = tmp_path / "unknown.nk"
    write_secret(unknown, new_seed())
    with pytest.raises(NatsRefused, match="refused the credential"):
        await connect(secured.server.url, "stranger", credentials=unknown, reconnect=False)
    garbage = tmp_path / "garbage.nk"
    garbage.write_text("not a seed\n")
    with pytest.raises(NatsRefused, match="one nkey seed"):
        await connect(secured.server.url, "stranger", credentials=garbage, reconnect=False)


async def test_a_worker_admitted_then_revoked_without_a_restart(secured, tmp_path: Path) -> None:
    from eventstore.credentials import write_secret

    seed = secured.credentials.issue_worker("w3")
    credential = tmp_path / "w3.nk"
    write_secret(credential, seed)
    with pytest.raises(NatsRefused):
        await connect(secured.server.url, "w3", credentials=credential, reconnect=False)  # not yet reloaded
    secured.credentials.write_authorization(T)
    assert await reload_nats(secured.data_dir) == 1
    nc = await connect(secured.server.url, "w3", credentials=credential, reconnect=False)
    await nc.publish(T.telemetry("heartbeat", "w3"), b"{}")
    await nc.flush()
    assert secured.credentials.revoke_worker("w3")
    secured.credentials.write_authorization(T)
    await reload_nats(secured.data_dir)
    await _eventually(lambda: nc.is_closed)  # the server closed its open connection
    with pytest.raises(NatsRefused):
        await connect(secured.server.url, "w3", credentials=credential, reconnect=False)


async def test_a_cluster_has_the_same_users_on_every_node(tmp_path: Path) -> None:
    from eventstore.credentials import CredentialStore
    from eventstore.server import cluster_nodes, write_record

    credentials = CredentialStore(tmp_path)
    credentials.ensure_control_plane()
    credentials.ensure_worker("w1")
    credentials.write_authorization(T)
    nodes = cluster_nodes(tmp_path / "cluster", 3, name="tperm", auth_file=credentials.authorization_path,
                          route_secret=credentials.route_secret())
    for node in nodes:
        node.start_process()
    try:
        await asyncio.gather(*(node.wait_healthy(30) for node in nodes))
        write_record(tmp_path, nodes[0], pid=nodes[0].process.pid, nodes=nodes)
        admin = await connect(nodes[0].url, "admin", credentials=credentials.role_path("admin"))
        await JetStreamLog(admin, T).ensure_streams(replicas=3)  # R3: the routes are up, with their password
        for node in nodes:
            with pytest.raises(NatsRefused):
                await connect(node.url, "stranger", reconnect=False)
        kept = tmp_path / "w1.nk"
        kept.write_bytes(credentials.worker_path("w1").read_bytes())
        worker = await connect(nodes[2].url, "w1", credentials=kept, reconnect=False)
        await worker.jetstream().publish(T.telemetry("heartbeat", "w1"), b"{}")
        credentials.revoke_worker("w1")
        credentials.write_authorization(T)
        assert await reload_nats(tmp_path) == 3
        await _eventually(lambda: worker.is_closed)
        for node in nodes:
            with pytest.raises(NatsRefused, match="refused the credential"):
                await connect(node.url, "w1", credentials=kept, reconnect=False)
        await admin.close()
        await _a_route_without_the_password_is_refused(nodes, tmp_path)
    finally:
        for node in nodes:
            node.stop()


async def _a_route_without_the_password_is_refused(nodes, tmp_path: Path) -> None:
    rogue = NatsServer(ServerSpec(store_dir=tmp_path / "rogue" / "jetstream", port=free_port(), http_port=free_port(),
                                  name="rogue", cluster_port=free_port(), routes=[nodes[0].spec.cluster_port],
                                  cluster_name="tperm"))
    rogue.start_process()
    try:
        await _eventually(lambda: "authorization" in rogue.log_tail(50).lower(), timeout=30)
        routes = await asyncio.to_thread(_http_json, f"http://127.0.0.1:{nodes[0].spec.http_port}/routez")
        assert {r.get("remote_name") for r in routes["routes"]} <= {"tperm-n1", "tperm-n2"}
    finally:
        rogue.stop()


def _http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


# Push consumers deliver where their creator says: no identity that writes a stream may make one on it, and a
# stored message delivered to a command endpoint is not a command.

async def test_a_worker_cannot_have_its_own_bytes_delivered_anywhere(secured) -> None:
    worker = await as_(secured, "worker", "w1")
    stream = f"OBJ_{T.checkpoint_bucket}"
    body = json.dumps({"stream_name": stream, "config": {"deliver_subject": T.command("scheduler", "submit"),
                                                         "filter_subject": f"$O.{T.checkpoint_bucket}.C.x"}})
    for subject in (f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{T.telemetry_stream}"):
        assert await worker.publish_refused(subject, body.encode(), reply=worker.nc.new_inbox()), subject


async def test_a_stored_message_delivered_to_an_endpoint_is_not_a_command(secured, admin) -> None:
    from contracts.commands import JobAccepted, SubmitJob
    from eventstore.micro import call, start_service

    scheduler = await as_(secured, "scheduler")
    handled: list[SubmitJob] = []

    async def submit(command: SubmitJob) -> JobAccepted:
        handled.append(command)
        return JobAccepted(job_id=new_id(), created=True, seq=1)

    service = await start_service(scheduler.nc, T, "scheduler", "0.0.0-test", {"submit": (SubmitJob, submit)})
    try:
        seen = asyncio.Event()

        async def watch(_msg) -> None:
            seen.set()

        await admin.nc.subscribe(T.command("scheduler", "submit"), cb=watch)
        await settled(admin)
        js = admin.nc.jetstream()
        await js.publish(f"$O.{T.checkpoint_bucket}.C.forged", encode(SubmitJob(workload="builtins:print")))
        await js.add_consumer(f"OBJ_{T.checkpoint_bucket}", deliver_subject=T.command("scheduler", "submit"),
                              filter_subject=f"$O.{T.checkpoint_bucket}.C.forged")
        await asyncio.wait_for(seen.wait(), 10)  # delivered: the service's connection has it too
        # A real command sent after it is handled after it (one connection, in order).
        await call(admin.nc, T, SubmitJob(workload="noop"), JobAccepted)
        assert [c.workload for c in handled] == ["noop"]
    finally:
        await service.stop()


async def test_a_join_credential_claims_its_own_token_only(secured) -> None:
    seed = new_user_seed()
    secured.credentials.admit_join("01JTOKENA", public_key(seed))
    secured.credentials.write_authorization(TOPOLOGY)
    await reload_nats(secured.data_dir)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(secured.server.url, error_cb=on_error, allow_reconnect=False,
                            **credential_options(None, seed=seed))
    probe = Probe(nc, errors)
    try:
        assert not await probe.publish_refused(T.command("join", "claim", "01JTOKENA"))
        for subject in (T.command("join", "claim", "01JTOKENB"), T.command("join", "claim"),
                        T.command("scheduler", "submit"), T.events("jointoken", "01JTOKENA")):
            assert await probe.publish_refused(subject), subject
    finally:
        await probe.close()
        secured.credentials.remove_keys({public_key(seed)})
        secured.credentials.write_authorization(TOPOLOGY)
        await reload_nats(secured.data_dir)
