"""Join tokens against a real TLS nats-server and the join desk: a machine joins once; anything else is refused."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from contracts import events as ev
from contracts.base import utcnow
from contracts.commands import ClaimJoinToken, JoinClaimed
from contracts.errors import Conflict, DomainError
from contracts.subjects import Topology
from eventstore import pki
from eventstore.config import CommonSettings
from eventstore.connect import NatsUnavailable, connect
from eventstore.log import JetStreamLog
from eventstore.micro import call
from eventstore.server import NatsServer, ServerSpec, free_port, write_record
from eventstore.service import ServiceContext
from ops import joined as membership
from ops.joindesk import JoinDesk
from ops.joining import issue_join_token, public_key, revoke_join_token
from ops.jointoken import InvalidJoinToken, decode_token
from tests.integration.fake_worker import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RecordedUsers:
    """The NatsUsers seam as a record of what was asked of it (NATS has no users yet to check it against)."""

    joins: dict[str, str] = field(default_factory=dict)  # key -> token id
    workers: dict[str, str] = field(default_factory=dict)  # key -> worker id
    removed: set[str] = field(default_factory=set)

    async def allow_join(self, token_id: str, public_key: str) -> None:
        self.joins[public_key] = token_id

    async def allow_worker(self, worker_id: str, public_key: str) -> None:
        self.workers[public_key] = worker_id

    async def remove(self, public_keys: Iterable[str]) -> None:
        self.removed |= set(public_keys)


@dataclass
class ControlPlane:
    data: Path
    server: NatsServer
    log: JetStreamLog
    users: RecordedUsers

    async def token(self, *, expires_in: timedelta = timedelta(hours=1), **options) -> str:
        _event, text = await issue_join_token(self.log, self.data, [self.server.url], expires_in=expires_in,
                                              users=self.users, **options)
        return text

    async def events(self, kind: type) -> list:
        found = []
        async for msg in self.log.read_raw(1, filter_subject=self.log.topology.events("jointoken")):
            stored = self.log.decode(msg)
            if stored is not None and isinstance(stored.event, kind):
                found.append(stored.event)
        return found


@pytest_asyncio.fixture
async def plane(tmp_path: Path, topology: Topology) -> AsyncIterator[ControlPlane]:
    """A TLS nats-server of a control-plane data dir (recorded there), its streams, and its join desk."""
    data = tmp_path / "control"
    tls = pki.ensure_server_tls(data, pki.machine_names("127.0.0.1"))
    server = NatsServer(ServerSpec(store_dir=tmp_path / "nats" / "jetstream", port=free_port(),
                                   http_port=free_port(), tls=tls))
    await server.start()
    write_record(data, server)
    nc = await connect(server.url, "admin", ca_file=str(tls.ca_file))
    log = JetStreamLog(nc, topology)
    await log.ensure_streams()
    users = RecordedUsers()
    stop = asyncio.Event()
    settings = CommonSettings(data_dir=str(data), prefix=topology.prefix)
    desk = asyncio.create_task(JoinDesk(ServiceContext("joins", settings, nc, log, stop), users).run())
    await wait_for_desk(server, tls.ca_file, topology)
    try:
        yield ControlPlane(data, server, log, users)
    finally:
        stop.set()
        await desk
        await nc.close()
        server.stop()


async def wait_for_desk(server: NatsServer, ca: Path, topology: Topology) -> None:
    """Until the desk answers (an unknown token's claim comes back refused)."""
    nc = await connect(server.url, "probe", ca_file=str(ca))
    try:
        for _ in range(100):
            try:
                await call(nc, topology, ClaimJoinToken(token_id="probe", worker_id="probe", worker_key=KEY),
                           JoinClaimed, timeout=1)
            except DomainError as exc:
                if exc.code == 404:
                    return
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    pytest.fail("the join desk never answered")


KEY = "U" + "A" * 55


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_machine_joins_over_tls_once_and_keeps_what_it_needs(plane: ControlPlane, tmp_path: Path) -> None:
    text = await plane.token(labels=("gpu", "big"))
    token = decode_token(text)
    machine = tmp_path / "machine-b"
    joined = await membership.join(machine, text, "host-b")
    assert (joined.worker_id, joined.labels, joined.urls) == ("host-b", ["gpu", "big"], [plane.server.url])
    assert joined.fingerprint == pki.file_fingerprint(plane.data / "tls" / "ca.pem") == token.fingerprint
    assert membership.read_joined(machine) == joined
    folder = machine / "join"
    assert mode(folder) == 0o700 and all(mode(folder / f) == 0o600 for f in ("ca.pem", "worker.nkey", "joined.json"))
    own_key = public_key(membership.seed_path(machine).read_text())
    [use] = await plane.events(ev.JoinTokenUsed)
    assert (use.token_id, use.worker_id, use.worker_key) == (token.token_id, "host-b", own_key)
    token_key = public_key(token.seed)
    assert plane.users.joins == {token_key: token.token_id} and plane.users.workers == {own_key: "host-b"}
    # The token's credential is spent: dropped once the reply is out.
    await eventually(lambda: token_key in plane.users.removed, what="the token's credential dropped")
    assert own_key != token_key

    # The joined machine now connects with what it kept, pinning the CA.
    nc = await connect(joined.nats_url, "joined", ca_file=str(membership.ca_path(machine)),
                       seed=membership.seed_path(machine).read_text())
    await nc.close()

    assert (await membership.join(machine, text)).worker_id == "host-b"  # the same command again: still joined
    with capture_logs() as logs, pytest.raises(Conflict, match="was already used \\(by worker host-b"):
        await membership.join(tmp_path / "machine-c", text, "host-c")
    assert any(e["event"] == "join refused" and "already used" in e["reason"] for e in logs)
    assert membership.read_joined(tmp_path / "machine-c") is None
    assert len(await plane.events(ev.JoinTokenUsed)) == 1


async def test_a_reusable_token_joins_several_machines(plane: ControlPlane, tmp_path: Path) -> None:
    text = await plane.token(reusable=True)
    for name in ("m1", "m2"):
        await membership.join(tmp_path / name, text, name)
    assert sorted(u.worker_id for u in await plane.events(ev.JoinTokenUsed)) == ["m1", "m2"]
    assert public_key(decode_token(text).seed) not in plane.users.removed
    with pytest.raises(Conflict, match="worker id m1 already joined"):
        await membership.join(tmp_path / "m3", text, "m1")


async def test_a_revoked_token_is_refused(plane: ControlPlane, tmp_path: Path) -> None:
    text = await plane.token()
    token = decode_token(text)
    assert await revoke_join_token(plane.log, token.token_id, plane.users) is not None
    assert public_key(token.seed) in plane.users.removed
    with pytest.raises(Conflict, match=f"join token {token.token_id} was revoked"):
        await membership.join(tmp_path / "m", text)
    assert await revoke_join_token(plane.log, token.token_id, plane.users) is None


async def test_an_expired_token_is_refused_on_the_machine_and_by_the_desk(plane: ControlPlane, tmp_path: Path) -> None:
    text = await plane.token(expires_in=timedelta(seconds=1), now=utcnow() - timedelta(minutes=5))
    with pytest.raises(InvalidJoinToken, match="expired at"):
        await membership.join(tmp_path / "m", text)
    token = decode_token(text)  # a machine that skipped its own check gets no further
    nc = await connect(plane.server.url, "m", reconnect=False, ca_file=str(plane.data / "tls" / "ca.pem"),
                       seed=token.seed)
    try:
        with pytest.raises(Conflict, match="expired at"):
            await call(nc, plane.log.topology, ClaimJoinToken(token_id=token.token_id, worker_id="m", worker_key=KEY),
                       JoinClaimed)
    finally:
        await nc.close()
    assert await plane.events(ev.JoinTokenUsed) == []


async def test_a_token_of_another_platform_is_refused_by_tls(plane: ControlPlane, tmp_path: Path) -> None:
    # A token made by another platform's data dir that names this server: its CA is not this server's.
    other = ControlPlane(tmp_path / "other", plane.server, plane.log, RecordedUsers())
    pki.ensure_ca(other.data)
    text = await other.token()
    with pytest.raises(NatsUnavailable, match=r"not signed by the pinned CA .* for another platform"):
        await membership.join(tmp_path / "m", text)
    assert membership.read_joined(tmp_path / "m") is None


async def test_a_machine_of_one_platform_refuses_a_token_of_another(plane: ControlPlane, tmp_path: Path) -> None:
    machine = tmp_path / "m"
    await membership.join(machine, await plane.token())
    other = ControlPlane(tmp_path / "other", plane.server, plane.log, RecordedUsers())
    with pytest.raises(InvalidJoinToken, match=r"already joined platform .* join with another --data-dir"):
        await membership.join(machine, await other.token())


def stoker(args: list[str], data: Path, prefix: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env |= {"STOKER_DATA_DIR": str(data), "STOKER_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ops", *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=ROOT)


async def test_the_cli_creates_lists_and_revokes_join_tokens(plane: ControlPlane, tmp_path: Path) -> None:
    prefix = plane.log.topology.prefix
    made = await asyncio.to_thread(stoker, ["--json", "join-token", "create", "--labels", "gpu,a100",
                                            "--expires", "2h", "--qr"], plane.data, prefix)
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    token = decode_token(out["token"])
    assert (token.labels, token.urls, out["ca_sha256"]) == (("gpu", "a100"), (plane.server.url,), token.fingerprint)
    shown = await asyncio.to_thread(stoker, ["join-token", "create", "--qr"], plane.data, prefix)
    assert shown.returncode == 0 and shown.stdout.startswith("SJ1") and "█" in shown.stderr
    assert "stoker worker --join TOKEN" in shown.stderr
    await membership.join(tmp_path / "m", out["token"], "cli-m")

    listed = json.loads((await asyncio.to_thread(stoker, ["--json", "join-token", "list"], plane.data, prefix)).stdout)
    states = {t["token_id"]: (t["state"], t["workers"]) for t in listed}
    assert states[token.token_id] == ("used", ["cli-m"]) and list(states.values()).count(("active", [])) == 1

    other = next(t for t in states if t != token.token_id)
    revoked = await asyncio.to_thread(stoker, ["join-token", "revoke", other], plane.data, prefix)
    assert revoked.returncode == 0 and f"join token {other} revoked" in revoked.stderr
    bad = await asyncio.to_thread(stoker, ["join-token", "create", "--url", "tls://elsewhere.example:4222"],
                                  plane.data, prefix)
    assert bad.returncode == 1 and "does not cover elsewhere.example" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


async def test_a_platform_without_tls_makes_no_join_tokens(nats_server, tmp_path: Path) -> None:
    data = tmp_path / "plain"
    data.mkdir()
    write_record(data, nats_server)
    made = await asyncio.to_thread(stoker, ["join-token", "create"], data, "stoker")
    assert made.returncode == 1 and "listens on 127.0.0.1 without TLS" in made.stderr
    assert "stoker up --listen 0.0.0.0" in made.stderr
