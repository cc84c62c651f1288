"""The attacks of issue 10 ("What was found") against `stoker up`, each refused by its nats-server.

Each attack is made without a credential (refused at connect) and with the credentials an attacker could
hold: the local worker's, a second ("rogue") worker admitted as a join would admit it, and, for what only
the admin may do, every service's own credential too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from contracts.base import new_id, utcnow
from contracts.codec import encode
from contracts.commands import JobAccepted, JobsStopping, RegisterWorker, ReportJobFinished, StopJob, SubmitJob
from contracts.dispatch import Assignment
from contracts.events import JobCompleted, TokenIssued, WorkerCapabilities
from contracts.subjects import Topology
from eventstore.connect import NatsRefused, connect, credential_options
from eventstore.credentials import CredentialStore, write_secret
from eventstore.log import JetStreamLog
from eventstore.micro import call
from eventstore.permissions import kv_key
from eventstore.records import event_headers
from eventstore.server import reload_nats
from eventstore.service import EXIT_NATS_REFUSED
from gateway.tokens import digest
from tests.e2e.conftest import Platform, start_platform, stop_platform, wait_until
from tests.secured import Probe

ROOT = Path(__file__).resolve().parents[2]
T = Topology()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`stoker up` of its own (an attack that got through must not spoil the other tests' platform)."""
    running = start_platform(tmp_path_factory.mktemp("secured-platform"))
    try:
        yield running
    finally:
        stop_platform(running)


def nats_url(up: Platform) -> str:
    return json.loads((up.data_dir / "nats.json").read_text())["url"]


def local_worker_id(up: Platform) -> str:
    return (up.data_dir / "trainer" / "worker-id").read_text().strip()


@pytest_asyncio.fixture(scope="module")
async def rogue(up: Platform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second worker's credential, admitted into the running platform as a join would (no restart)."""
    credentials = CredentialStore(up.data_dir)
    path = tmp_path_factory.mktemp("rogue") / "rogue.nk"
    write_secret(path, credentials.issue_worker("rogue"))
    credentials.write_authorization(T)
    await reload_nats(up.data_dir)
    return path


class Identities:
    """Connections to the platform as each identity an attacker might hold."""

    def __init__(self, up: Platform, rogue: Path) -> None:
        store = CredentialStore(up.data_dir)
        self.url = nats_url(up)
        self.files = {"worker": store.worker_path(local_worker_id(up)), "rogue": rogue,
                      **{role: store.role_path(role) for role in ("scheduler", "discovery", "projector", "gateway")},
                      "admin": store.role_path("admin")}
        self.probes: list[Probe] = []

    async def probe(self, who: str) -> Probe:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(self.url, error_cb=on_error, allow_reconnect=False,
                                **credential_options(self.files[who]))
        probe = Probe(nc, errors)
        self.probes.append(probe)
        return probe

    async def close(self) -> None:
        for probe in self.probes:
            await probe.close()


@pytest_asyncio.fixture
async def who(up: Platform, rogue: Path):
    identities = Identities(up, rogue)
    yield identities
    await identities.close()


WORKERS = ("worker", "rogue")
EVERYONE_BUT_ADMIN = ("worker", "rogue", "scheduler", "discovery", "projector", "gateway")


async def test_an_unauthenticated_client_is_refused(up: Platform) -> None:
    with pytest.raises(NatsRefused, match="requires a credential"):
        await connect(nats_url(up), "attacker", reconnect=False)
    with pytest.raises(nats.errors.Error, match="Authorization"):
        await nats.connect(nats_url(up), allow_reconnect=False, max_reconnect_attempts=0)


def test_the_data_dir_and_its_secrets_are_private(up: Platform) -> None:
    data = up.data_dir
    for directory in (data, data / "logs", data / "credentials", data / "credentials" / "workers"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    for path in [*(data / "credentials").rglob("*"), *(data / "logs").glob("*.log"), data / "admin.token"]:
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize("attacker", WORKERS)
async def test_a_forged_admin_token_event_is_refused(up: Platform, who: Identities, attacker: str) -> None:
    probe = await who.probe(attacker)
    secret = f"stk_{new_id()}"
    event = TokenIssued(token_id=new_id(), role="admin", token_sha256=digest(secret), issued_at=utcnow())
    subject = T.events("token", event.token_id)
    assert await probe.publish_refused(subject, encode(event), headers=event_headers(event, new_id(), new_id(),
                                                                                          None))
    with up.client(secret) as client:
        assert client.get("/api/v1/jobs").status_code == 401


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run as another user of the machine (nobody): its modules load as root, then it drops to nobody."""
    script = ("import os, sys\nfrom ops.cli import main\nos.setgid(65534)\nos.setuid(65534)\n"
              f"sys.argv = ['stoker', *{list(args)!r}]\nmain()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd="/",
                          env={**env, "PYTHONPATH": str(ROOT)})


def test_another_local_user_cannot_make_an_admin_token(up: Platform) -> None:
    command = ("--data-dir", str(up.data_dir), "token", "create", "--role", "admin")
    result = as_nobody(*command)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "permission denied" in result.stderr
    # Even where the data dir can be reached (its parents searchable by all), the admin credential cannot.
    parents = [up.data_dir.parent, up.data_dir.parent.parent]
    modes = [p.stat().st_mode & 0o777 for p in parents]
    try:
        for parent in parents:
            parent.chmod(0o711)
        result = as_nobody(*command)
    finally:
        for parent, mode in zip(parents, modes, strict=True):
            parent.chmod(mode)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot read" in result.stderr and "permission denied" in result.stderr


async def running_job(up: Platform) -> tuple[str, str]:
    """A long job, once it runs: (job id, the worker running it)."""
    admin = await connect(nats_url(up), "test-admin", credentials=CredentialStore(up.data_dir).role_path("admin"))
    try:
        accepted = await call(admin, T, SubmitJob(workload="sleep", max_iterations=100_000, params={"step_s": 0.05}),
                              JobAccepted)
    finally:
        await admin.close()

    def started() -> dict | None:
        with up.client() as client:
            row = client.get(f"/api/v1/jobs/{accepted.job_id}").json()
        return row if row["status"] == "running" else None

    row = await asyncio.to_thread(wait_until, started, 60, "the job to run", up.log_tail)
    return accepted.job_id, row["worker_id"]


async def stop_job(up: Platform, job_id: str) -> None:
    admin = await connect(nats_url(up), "test-admin", credentials=CredentialStore(up.data_dir).role_path("admin"))
    try:
        await call(admin, T, StopJob(job_id=job_id), JobsStopping)
    finally:
        await admin.close()


def job_status(up: Platform, job_id: str) -> str:
    with up.client() as client:
        return client.get(f"/api/v1/jobs/{job_id}").json()["status"]


async def test_a_forged_job_completion_is_refused(up: Platform, who: Identities) -> None:
    job_id, worker_id = await running_job(up)
    try:
        completed = JobCompleted(job_id=job_id, attempt=1, completed_at=utcnow(), result={"forged": True})
        for attacker in WORKERS:
            probe = await who.probe(attacker)
            assert await probe.publish_refused(T.events("job", job_id), encode(completed),
                                               headers=event_headers(completed, new_id(), new_id(), None))
        report = ReportJobFinished(job_id=job_id, attempt=1, worker_id=worker_id, outcome="completed")
        rogue = await who.probe("rogue")
        # On the running worker's own subject: the server refuses the rogue.
        assert await rogue.publish_refused(T.command("scheduler", "report", worker_id), encode(report))
        # On its own subject, speaking for the running worker: the scheduler refuses it.
        reply = await rogue.nc.request(T.command("scheduler", "report", "rogue"), encode(report), timeout=10)
        assert json.loads(reply.data)["code"] == 403
        assert job_status(up, job_id) == "running"
    finally:
        await stop_job(up, job_id)


async def test_a_rogue_cannot_pass_for_another_worker(up: Platform, who: Identities) -> None:
    local = local_worker_id(up)
    rogue = await who.probe("rogue")
    caps = WorkerCapabilities(hostname="evil", cpu_cores=64, ram_mb=1 << 20, slots=64)
    assert await rogue.publish_refused(T.command("discovery", "register", local),
                                       encode(RegisterWorker(worker_id=local, capabilities=caps)))
    reply = await rogue.nc.request(T.command("discovery", "register", "rogue"),
                                   encode(RegisterWorker(worker_id=local, capabilities=caps)), timeout=10)
    assert json.loads(reply.data)["code"] == 403
    assert await rogue.publish_refused(T.telemetry("heartbeat", local), b"{}")
    assert await rogue.subscribe_refused(T.dispatch(local))
    assert await rogue.subscribe_refused(T.dispatch(">"))
    with up.client() as client:
        assert {w["id"]: w["hostname"] for w in client.get("/api/v1/workers").json()["items"]}[local] != "evil"


@pytest.mark.parametrize("attacker", WORKERS)
async def test_a_forged_assignment_is_refused(up: Platform, who: Identities, attacker: str) -> None:
    local = local_worker_id(up)
    assignment = Assignment(job_id=new_id(), attempt=1, worker_id=local, kind="train", workload="builtins:print",
                            assigned_at=utcnow())
    admin = await who.probe("admin")
    before = (await admin.nc.jetstream().stream_info(T.dispatch_stream)).state.messages
    probe = await who.probe(attacker)
    assert await probe.publish_refused(T.dispatch(local), encode(assignment))
    assert (await admin.nc.jetstream().stream_info(T.dispatch_stream)).state.messages == before


@pytest.mark.parametrize("attacker", EVERYONE_BUT_ADMIN)
async def test_the_event_log_cannot_be_cut_or_deleted(up: Platform, who: Identities, attacker: str) -> None:
    admin = await who.probe("admin")
    log = JetStreamLog(admin.nc, T)
    before = (await log.stream_state()).messages
    assert before > 0
    probe = await who.probe(attacker)
    update = {"name": T.events_stream, "subjects": [T.all_events], "max_msgs": 5, "discard": "old",
              "storage": "file", "num_replicas": 1}
    for subject, body in ((f"$JS.API.STREAM.UPDATE.{T.events_stream}", update),
                          (f"$JS.API.STREAM.DELETE.{T.events_stream}", {}),
                          (f"$JS.API.STREAM.PURGE.{T.events_stream}", {})):
        assert await probe.publish_refused(subject, json.dumps(body).encode(), reply=probe.nc.new_inbox()), subject
    assert (await log.stream_state()).messages >= before
    assert (await admin.nc.jetstream().stream_info(T.events_stream)).config.max_msgs == -1


async def test_the_scheduler_lease_cannot_be_rewritten(up: Platform, who: Identities) -> None:
    attackers = [await who.probe(name) for name in ("worker", "rogue", "gateway", "discovery", "projector")]
    lease = kv_key(T.lease_bucket, "scheduler")
    admin = await who.probe("admin")
    kv = await admin.nc.jetstream().key_value(T.lease_bucket)
    holder = (await kv.get("scheduler")).value
    submitted = 0
    with up.client() as client:
        for round_ in range(10):
            for attacker in attackers:
                assert await attacker.publish_refused(lease, b"attacker"), round_
            reply = await asyncio.to_thread(client.post, "/api/v1/jobs", json={"workload": "noop"})
            assert reply.status_code == 201, reply.text
            submitted += 1
    assert submitted == 10
    assert (await kv.get("scheduler")).value == holder


async def test_a_revoked_worker_is_cut_off_at_once(up: Platform, who: Identities, tmp_path: Path) -> None:
    credentials = CredentialStore(up.data_dir)
    path = tmp_path / "short.nk"
    write_secret(path, credentials.issue_worker("short-lived"))
    credentials.write_authorization(T)
    await reload_nats(up.data_dir)
    nc = await connect(nats_url(up), "short-lived", credentials=path, reconnect=False)
    credentials.revoke_worker("short-lived")
    credentials.write_authorization(T)
    await reload_nats(up.data_dir)
    deadline = asyncio.get_running_loop().time() + 15
    while not nc.is_closed:
        assert asyncio.get_running_loop().time() < deadline, "the revoked connection stayed open"
        await asyncio.sleep(0.05)
    with pytest.raises(NatsRefused, match="refused the credential"):
        await connect(nats_url(up), "short-lived", credentials=path, reconnect=False)


def stoker_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (no STOKER_* of the test's own environment)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    return subprocess.run([sys.executable, "-m", "ops", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**clean, **env})


def test_a_worker_of_another_machine_is_admitted_runs_a_job_and_is_revoked(up: Platform, tmp_path: Path) -> None:
    credential = tmp_path / "remote-1.nk"
    admitted = stoker_cli("--data-dir", str(up.data_dir), "security", "admit-worker", "remote-1",
                          "--out", str(credential))
    assert admitted.returncode == 0 and "in effect now" in admitted.stdout, admitted.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    log = tmp_path / "remote-1.log"
    with log.open("ab") as out:  # its own data dir, as on its own machine
        worker = subprocess.Popen(
            [sys.executable, "-m", "ops", "--data-dir", str(tmp_path / "remote"), "--nats", nats_url(up),
             "--credentials", str(credential), "worker", "--id", "remote-1", "--label", "remote"],
            cwd=ROOT, stdout=out, stderr=out, start_new_session=True,
            env={**clean, "STOKER_TRAINER_DETECT_GPUS": "false", "STOKER_LOG_FORMAT": "json"})
    try:
        def healthy() -> bool:
            with up.client() as client:
                return any(w["id"] == "remote-1" and w["status"] == "healthy"
                           for w in client.get("/api/v1/workers").json()["items"])

        wait_until(healthy, 60, "the remote worker to register", log.read_text)
        with up.client() as client:
            reply = client.post("/api/v1/jobs", json={"workload": "noop", "labels": ["remote"]})
            assert reply.status_code == 201, reply.text
            job_id = reply.json()["id"]

            def done() -> dict | None:
                row = client.get(f"/api/v1/jobs/{job_id}").json()
                return row if row["status"] == "completed" else None

            row = wait_until(done, 60, "the remote worker's job to complete", log.read_text)
        assert row["worker_id"] == "remote-1"
        revoked = stoker_cli("--data-dir", str(up.data_dir), "security", "revoke-worker", "remote-1")
        assert revoked.returncode == 0 and "in effect now" in revoked.stdout, revoked.stderr
        # Cut off, it cannot do its job any more: it stops, saying why, instead of retrying forever.
        assert worker.wait(60) == EXIT_NATS_REFUSED
        assert "refused this connection's credential" in log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
