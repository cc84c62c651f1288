"""The permission table as a pure function: every rule of docs/security.md, checked without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.base import Command
from contracts.commands import COMMANDS, endpoints
from contracts.subjects import Topology
from eventstore.credentials import User, authorization_config, new_seed, public_key
from eventstore.permissions import (
    CONTROL_PLANE,
    MANAGEMENT,
    ROLES,
    WRITERS,
    allows,
    event_aggregates,
    inbox_prefix,
    permission_table,
    permissions,
    subject_matches,
)

T = Topology()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ids = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)
prefixes = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


def perms(role: str, worker_id: str = "w1", topology: Topology = T):
    return permissions(role, topology, worker_id if role == "worker" else None, public_key="UKEY")


def may_publish(role: str, subject: str, **kw) -> bool:
    return allows(perms(role, **kw), subject)


def may_subscribe(role: str, subject: str, **kw) -> bool:
    return allows(perms(role, **kw), subject, publish=False)


def test_subject_matching_follows_nats() -> None:
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*.c", "a.b.c.d")
    assert subject_matches("a.>", "a.b.c") and not subject_matches("a.>", "a")
    assert subject_matches("a.b", "a.b") and not subject_matches("a.b", "a.b.c") and not subject_matches("a.b.c", "a.b")


def test_every_aggregate_has_exactly_the_writers_the_design_names() -> None:
    assert set(WRITERS) == event_aggregates()  # a new kind of event needs its writer named here
    for aggregate in event_aggregates():
        writers = {r for r in ROLES if may_publish(r, T.events(aggregate, "01J"))}
        assert writers == {"admin", *WRITERS[aggregate]}, aggregate
    assert WRITERS == {"job": ("scheduler",), "worker": ("discovery",), "token": ("gateway",),
                       "jointoken": ("joins",), "map": ("gateway",), "alert": ("monitor",), "firewall": (),
                       "network": ("discovery",), "credential": ()}


def test_a_join_tokens_credential_may_only_claim() -> None:
    join = permissions("join", T, public_key="UKEY", token_id="01JTOKEN")
    assert allows(join, T.command("join", "claim", "01JTOKEN"))
    # Its own token only: a copied join credential cannot even ask about another token.
    assert not allows(join, T.command("join", "claim", "01JOTHER")) and not allows(join, T.command("join", "claim"))
    for subject in (T.events("jointoken", "01J"), T.command("scheduler", "submit"), T.dispatch("w1"),
                    T.telemetry("heartbeat", "w1"), f"$JS.API.STREAM.INFO.{T.events_stream}", "$SRV.PING"):
        assert not allows(join, subject), subject
    assert allows(join, "_INBOX.UKEY.x", publish=False) and not allows(join, "_INBOX.OTHER.x", publish=False)


def test_the_join_desk_serves_claims_and_writes_only_join_tokens() -> None:
    desk = permissions("joins", T, public_key="UKEY")
    assert allows(desk, T.events("jointoken", "01J")) and not allows(desk, T.events("job", "01J"))
    assert allows(desk, T.command("join", "claim"), publish=False)
    assert not allows(desk, T.command("scheduler", "submit"), publish=False)


def test_nobody_but_the_admin_manages_streams_or_buckets() -> None:
    for role in ROLES:
        for stream in (T.events_stream, T.telemetry_stream, T.dispatch_stream, f"KV_{T.lease_bucket}",
                       f"OBJ_{T.checkpoint_bucket}", "ANY"):
            for verb in ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE", "SNAPSHOT", "RESTORE"):
                assert may_publish(role, f"$JS.API.STREAM.{verb}.{stream}") == (role == "admin"), (role, verb)
        assert may_publish(role, "$JS.API.CONSUMER.DELETE.STOKER_DISPATCH.worker-w1") == (role == "admin")
        assert may_publish(role, "$JS.API.CONSUMER.DURABLE.CREATE.STOKER_DISPATCH.worker-w1") == (role == "admin")
        # Nobody else has a JetStream wildcard: the only one is a direct get's subject, after its stream.
        if role != "admin":
            wild = [p for p in perms(role).publish_allow if p.startswith("$JS.API") and ("*" in p or ">" in p)]
            assert all(p.startswith("$JS.API.DIRECT.GET.") and p.count(".") >= 5 for p in wild), (role, wild)


def test_management_is_denied_not_only_left_out() -> None:
    for role in ROLES:
        if role != "admin":
            assert set(MANAGEMENT) <= set(perms(role).publish_deny), role


def test_leases_and_snapshots_are_writable_only_by_their_holders() -> None:
    for key, holder in (("scheduler", "scheduler"), ("discovery", "discovery")):
        subject = f"$KV.{T.lease_bucket}.{key}"
        assert {r for r in ROLES if may_publish(r, subject)} == {"admin", holder}
    for subject in (f"$KV.{T.snapshot_bucket}.scheduler", f"$KV.{T.snapshot_bucket}.scheduler.a.0"):
        assert {r for r in ROLES if may_publish(r, subject)} == {"admin", "scheduler"}
    # Reading a lease is by key too: the scheduler may read its own, not discovery's.
    direct = f"$JS.API.DIRECT.GET.KV_{T.lease_bucket}.$KV.{T.lease_bucket}"
    assert may_publish("scheduler", f"{direct}.scheduler") and not may_publish("scheduler", f"{direct}.discovery")


def test_the_lease_keys_are_the_services_own() -> None:
    from services.discovery.adapter import LEASE_KEY as DISCOVERY_KEY
    from services.scheduler.adapter import LEASE_KEY as SCHEDULER_KEY

    assert may_publish("scheduler", f"$KV.{T.lease_bucket}.{SCHEDULER_KEY}")
    assert may_publish("discovery", f"$KV.{T.lease_bucket}.{DISCOVERY_KEY}")


def test_only_the_scheduler_dispatches_and_a_worker_reads_only_its_own_queue() -> None:
    assert {r for r in ROLES if may_publish(r, T.dispatch("w1"))} == {"admin", "scheduler"}
    own = f"$JS.API.CONSUMER.CREATE.{T.dispatch_stream}.worker-w1.{T.dispatch('w1')}"
    assert may_publish("worker", own)
    assert not may_publish("worker", f"$JS.API.CONSUMER.CREATE.{T.dispatch_stream}.worker-w2.{T.dispatch('w2')}")
    assert not may_publish("worker", f"$JS.API.CONSUMER.CREATE.{T.dispatch_stream}.worker-w1.{T.dispatch('w2')}")
    assert not may_publish("worker", f"$JS.API.CONSUMER.CREATE.{T.dispatch_stream}")  # no ephemeral readers
    assert may_publish("worker", f"$JS.API.CONSUMER.MSG.NEXT.{T.dispatch_stream}.worker-w1")
    assert not may_publish("worker", f"$JS.API.CONSUMER.MSG.NEXT.{T.dispatch_stream}.worker-w2")
    assert may_publish("worker", f"$JS.ACK.{T.dispatch_stream}.worker-w1.1.2.3.4.5")
    assert not may_publish("worker", f"$JS.ACK.{T.dispatch_stream}.worker-w2.1.2.3.4.5")
    for role in ROLES:
        assert may_subscribe(role, T.dispatch("w1")) == (role == "admin")  # nobody reads it bare


def test_a_worker_publishes_only_its_telemetry_commands_and_checkpoints() -> None:
    worker = perms("worker")
    assert allows(worker, T.telemetry("heartbeat", "w1")) and not allows(worker, T.telemetry("heartbeat", "w2"))
    for kind in ("progress", "episode"):  # a job's samples only on subjects that name this worker
        assert allows(worker, T.job_telemetry(kind, "01J", "w1"))
        assert not allows(worker, T.job_telemetry(kind, "01J", "w2"))
        assert not allows(worker, T.telemetry(kind, "01J"))  # the old subject names no one: only history
        assert not allows(worker, f"{T.job_telemetry(kind, '01J', 'w1')}.more")
    assert not allows(worker, T.telemetry("metrics", "01J"))
    for service, verb in endpoints(from_worker=True):
        assert allows(worker, T.command(service, verb, "w1")) and not allows(worker, T.command(service, verb, "w2"))
    for service, verb in endpoints(from_worker=False):
        assert not allows(worker, T.command(service, verb)), verb
    assert allows(worker, f"$O.{T.checkpoint_bucket}.C.nuid") and allows(worker, f"$O.{T.checkpoint_bucket}.M.bmFtZQ")
    assert not allows(worker, "$SRV.PING") and not allows(worker, T.events("job", "01J"))
    assert not allows(worker, f"$KV.{T.lease_bucket}.scheduler")
    assert not allows(worker, f"$JS.API.CONSUMER.CREATE.{T.events_stream}")  # it does not read the log


def test_commands_reach_only_their_service_and_come_only_from_who_sends_them() -> None:
    submit, stop = T.command("scheduler", "submit"), T.command("scheduler", "stop")
    assert {r for r in ROLES if may_publish(r, submit)} == {"admin", "gateway"}
    assert {r for r in ROLES if may_publish(r, stop)} == {"admin", "gateway"}
    assert {r for r in ROLES if may_publish(r, T.command("scheduler", "report", "w1"))} == {"admin", "worker"}
    assert {r for r in ROLES if may_publish(r, T.command("discovery", "register", "w1"))} == \
        {"admin", "worker", "gateway"}  # the gateway's POST /workers/register
    assert {r for r in ROLES if may_publish(r, T.command("scheduler", "restart"))} == {"admin", "monitor"}
    assert {r for r in ROLES if may_subscribe(r, submit)} == {"admin", "scheduler"}
    assert {r for r in ROLES if may_subscribe(r, T.command("discovery", "register", "w1"))} == {"admin", "discovery"}


def test_every_command_is_listed_and_worker_commands_name_the_worker() -> None:
    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in (s, *subclasses(s))}

    assert subclasses(Command) <= set(COMMANDS)
    for command in COMMANDS:
        if command.from_worker:
            assert "worker_id" in command.__struct_fields__, command


def test_replies_go_only_to_inboxes_and_each_reads_only_its_own() -> None:
    for role in ROLES:
        if role == "admin":
            continue
        mine = perms(role)
        assert allows(mine, f"{inbox_prefix('UKEY')}.abc", publish=False)
        assert not allows(mine, f"{inbox_prefix('UOTHER')}.abc", publish=False)
        assert not allows(mine, "_INBOX.abc", publish=False)
        # No allow_responses: a responder can answer an inbox, never a subject a requester chose.
        assert not allows(mine, f"$JS.API.STREAM.DELETE.{T.events_stream}")
        assert not allows(mine, T.events("job", "x")) or role == "scheduler"


def test_core_subscriptions_to_the_log_and_heartbeats() -> None:
    for role in ROLES:
        assert may_subscribe(role, T.events("job", "x")) == (role == "admin")
    assert {r for r in ROLES if may_subscribe(r, T.telemetry("heartbeat", "w1"))} == {"admin", "discovery", "monitor"}


@given(ids, ids, prefixes)
def test_no_worker_may_act_for_another(a: str, b: str, prefix: str) -> None:
    topology = Topology(prefix)
    if a == b:
        return
    mine = permissions("worker", topology, a)
    theirs = [topology.telemetry("heartbeat", b), topology.dispatch(b),
              f"$JS.API.CONSUMER.MSG.NEXT.{topology.dispatch_stream}.{topology.dispatch_consumer(b)}",
              f"$JS.ACK.{topology.dispatch_stream}.{topology.dispatch_consumer(b)}.1",
              f"$JS.API.CONSUMER.CREATE.{topology.dispatch_stream}.{topology.dispatch_consumer(b)}."
              f"{topology.dispatch(b)}",
              *(topology.command(s, v, b) for s, v in endpoints(from_worker=True))]
    assert not any(allows(mine, subject) for subject in theirs)


@given(prefixes, st.sampled_from([r for r in ROLES if r != "admin"]))
def test_no_role_reaches_another_installation(prefix: str, role: str) -> None:
    other = Topology(f"{prefix}x")
    mine = permissions(role, Topology(prefix), "w1" if role == "worker" else None)
    for subject in (other.events("job", "1"), other.events("token", "1"), other.dispatch("w1"),
                    other.command("scheduler", "submit"), other.telemetry("heartbeat", "w1"),
                    f"$KV.{other.lease_bucket}.scheduler", f"$JS.API.STREAM.INFO.{other.events_stream}"):
        assert not allows(mine, subject), subject


def test_bad_identities_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        permissions("root", T)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="worker id"):
        permissions("worker", T)
    with pytest.raises(ValueError, match="worker id"):
        permissions("scheduler", T, "w1")
    with pytest.raises(ValueError, match="letters"):
        permissions("worker", T, "a.b")


def test_the_server_config_admits_exactly_the_users_given() -> None:
    seeds = {role: new_seed() for role in CONTROL_PLANE}
    users = [User(role, public_key(seed)) for role, seed in seeds.items()] + [User("worker", public_key(new_seed()),
                                                                                 "w1")]
    text = authorization_config(users, T)
    assert all(text.count(u.public_key) == 2 for u in users if u.role != "admin")  # nkey and its inbox
    assert not any(seed in text for seed in seeds.values())  # public keys only
    assert "allow_responses" not in text


def test_the_docs_show_the_table_the_function_makes() -> None:
    table = permission_table(T)
    assert table in DOCS.read_text(), "docs/security.md is out of date: paste `stoker security permissions` into it"
