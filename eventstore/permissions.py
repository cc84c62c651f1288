"""Who may publish and subscribe to what on NATS: one identity per role, derived from the Topology.

A pure function of the code's own names (`contracts.subjects.Topology`, the commands and events of
`contracts/`), so the server's permissions cannot drift from what the services send. `eventstore.credentials`
writes them into the nats-server configuration; `permission_table` is the table in docs/security.md.

Rules the lists follow (docs/security.md says why):
- Only the writer of an aggregate publishes its events: `job` the scheduler, `worker` discovery, `token` the
  gateway (and the admin).
- Nobody but the admin manages JetStream: each role names the exact API subjects it needs (stream info,
  consumer creation, direct and message gets, pull requests), and every management subject is denied too.
- A worker publishes only its own heartbeats, job telemetry, its own commands (subjects ending in its id) and
  checkpoint chunks, and reads only its own dispatch consumer (whose filter is in the create subject).
- Replies: each connection receives on `_INBOX.<its public key>.>` only, so nobody reads another's replies. A
  responder may publish replies only under `_INBOX.` (not `allow_responses`, which would let a requester
  name any reply subject, `$JS.API.STREAM.DELETE.…` included, and have the responder publish there).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from contracts.base import is_valid_id
from contracts.commands import endpoints
from contracts.events import EVENT_TYPES
from contracts.subjects import Topology

Role = Literal["admin", "scheduler", "discovery", "projector", "gateway", "monitor", "joins", "worker", "join"]
ROLES: tuple[Role, ...] = ("admin", "scheduler", "discovery", "projector", "gateway", "monitor", "joins", "worker",
                           "join")
# `joins` is the join desk (ops/joindesk.py, answering `join.claim`); `join` the credential a join token
# carries, which may only claim it.
CONTROL_PLANE: tuple[Role, ...] = ("admin", "scheduler", "discovery", "projector", "gateway", "monitor", "joins")
SERVICES = ("scheduler", "discovery", "projector")  # roles that answer commands and `$SRV` pings
MICRO_OF: dict[str, str] = {"joins": "join"}  # roles whose micro service has another name

# The one writer of each aggregate's events (the admin may write any: `stoker events import`).
WRITERS: dict[str, tuple[Role, ...]] = {"job": ("scheduler",), "worker": ("discovery",), "token": ("gateway",),
                                        "jointoken": ("joins",), "map": ("gateway",), "alert": ("monitor",),
                                        # `stoker firewall` records its changes as the admin (it runs as root on
                                        # the control plane); no service may.
                                        "firewall": (),
                                        "network": ("discovery",),  # network: LAN addresses (issue 14)
                                        # Who may connect (ops.members): the admin CLI's admits and revokes;
                                        # no service may, a worker least of all.
                                        "credential": ()}
# Which leases (keys of `Topology.lease_bucket`) and snapshots (keys of `Topology.snapshot_bucket`) a role holds.
LEASES: dict[str, Role] = {"scheduler": "scheduler", "discovery": "discovery", "monitor": "monitor"}
SNAPSHOTS: dict[str, Role] = {"scheduler": "scheduler"}
# Commands the gateway sends on behalf of REST clients (submit, stop, and a worker registration).
GATEWAY_COMMANDS = (("scheduler", "submit"), ("scheduler", "stop"))
GATEWAY_WORKER_COMMANDS = (("discovery", "register"),)
# The one command the monitor sends: restart a stalled job (it never appends `job.*` itself).
MONITOR_COMMANDS = (("scheduler", "restart"),)

JS_API = "$JS.API"
INBOX = "_INBOX"
# JetStream management: never for anyone but the admin, whatever an allow list says.
MANAGEMENT = (*(f"{JS_API}.{p}" for p in (
    "STREAM.CREATE.>", "STREAM.UPDATE.>", "STREAM.DELETE.>", "STREAM.PURGE.>", "STREAM.MSG.DELETE.>",
    "STREAM.SNAPSHOT.>", "STREAM.RESTORE.>", "STREAM.PEER.>", "STREAM.LEADER.>", "CONSUMER.DELETE.>",
    "CONSUMER.PAUSE.>", "CONSUMER.UNPIN.>", "CONSUMER.LEADER.>", "CONSUMER.DURABLE.CREATE.>", "ACCOUNT.>",
    "META.>", "SERVER.>")), "$SYS.>")


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """One NATS user's permissions (nats-server `permissions` block); an empty allow list means nothing."""

    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...]
    subscribe_deny: tuple[str, ...] = ()

    def config(self) -> dict:
        """The nats-server form: {"publish": {"allow": [...], "deny": [...]}, "subscribe": {...}}."""
        def side(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict:
            return {"allow": list(allow), **({"deny": list(deny)} if deny else {})}

        return {"publish": side(self.publish_allow, self.publish_deny),
                "subscribe": side(self.subscribe_allow, self.subscribe_deny)}


def inbox_prefix(public_key: str) -> str:
    """Where one user's replies arrive (nats-py `inbox_prefix`): `_INBOX.<its public nkey>`."""
    return f"{INBOX}.{public_key}"


def api(*tokens: str) -> str:
    """A JetStream API subject: api("STREAM", "INFO", name) → `$JS.API.STREAM.INFO.<name>`."""
    return ".".join((JS_API, *tokens))


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_key(bucket: str, key: str) -> str:
    """The subject one KV key is written on."""
    return f"$KV.{bucket}.{key}"


def object_stream(bucket: str) -> str:
    """The stream behind an object store bucket."""
    return f"OBJ_{bucket}"


def read_stream(stream: str) -> tuple[str, ...]:
    """What reading a stream takes: info, ordered (ephemeral) consumers and their flow control, message gets."""
    return (api("STREAM", "INFO", stream), api("CONSUMER", "CREATE", stream), f"$JS.FC.{stream}.>",
            api("DIRECT", "GET", stream), api("DIRECT", "GET", stream, ">"), api("STREAM", "MSG", "GET", stream))


def read_keys(bucket: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """Reading (and writing) some keys of a KV bucket: bucket info, direct gets of exactly those keys, the keys."""
    stream = kv_stream(bucket)
    return (api("STREAM", "INFO", stream), *(api("DIRECT", "GET", stream, kv_key(bucket, k)) for k in keys),
            *(kv_key(bucket, k) for k in keys))


def _own_keys(bucket: str, holders: dict[str, Role], role: Role) -> tuple[str, ...]:
    keys = [k for k, holder in holders.items() if holder == role]
    # A key's value may span sub-keys (`scheduler.a.0`: snapshot chunks): `<key>.>` belongs to its holder.
    return read_keys(bucket, tuple(keys) + tuple(f"{k}.>" for k in keys)) if keys else ()


def _micro(topology: Topology, service: str) -> tuple[str, ...]:
    """What a `nats.micro` service subscribes to: its `$SRV` discovery subjects and its command endpoints."""
    name = topology.service_name(service)
    return ("$SRV.PING", "$SRV.INFO", "$SRV.STATS", f"$SRV.*.{name}", f"$SRV.*.{name}.*",
            f"{topology.prefix}.cmd.{service}.>")


def _appends(topology: Topology, role: Role) -> tuple[str, ...]:
    return tuple(topology.events(aggregate) for aggregate, writers in WRITERS.items() if role in writers)


def _denied_events(topology: Topology, role: Role) -> tuple[str, ...]:
    return tuple(f"{topology.prefix}.events.{aggregate}.>" for aggregate, writers in WRITERS.items()
                 if role not in writers)


def _denied_keys(topology: Topology, role: Role) -> tuple[str, ...]:
    out = []
    for bucket, holders in ((topology.lease_bucket, LEASES), (topology.snapshot_bucket, SNAPSHOTS)):
        out += [kv_key(bucket, key) for key, holder in holders.items() if holder != role]
        out += [kv_key(bucket, f"{key}.>") for key, holder in holders.items() if holder != role]
    return tuple(out)


def _denials(topology: Topology, role: Role) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) denied to a role whatever its allow list says: management, others' writes, and
    core subscriptions to what only JetStream consumers or the service itself should see."""
    publish = (*MANAGEMENT, *_denied_events(topology, role), *_denied_keys(topology, role))
    if role != "scheduler":
        publish += (topology.dispatch(">"),)
    others = tuple(f"{topology.prefix}.cmd.{s}.>" for s in (*SERVICES, *MICRO_OF.values())
                   if s != MICRO_OF.get(role, role))
    subscribe = (topology.dispatch(">"), topology.all_events, *others)
    return publish, subscribe


def permissions(role: Role, topology: Topology, worker_id: str | None = None, *,
                public_key: str | None = None, token_id: str | None = None) -> Permissions:
    """The permissions of one identity: `role`, for a worker its `worker_id`, for a join token's credential
    the token's `token_id` (its claim subject ends in it; the table shows `<token>`).

    `public_key` names the user's own inbox (`_INBOX.<public key>.>`); without it, the rules are shown with
    `_INBOX.<key>` (the table).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if (role == "worker") != (worker_id is not None):
        raise ValueError("a worker's permissions need its worker id, and only a worker's")
    if worker_id is not None and not is_valid_id(worker_id):
        raise ValueError(f"worker id {worker_id!r} may hold only letters, digits, '-' and '_'")
    if role == "admin":
        return Permissions(publish_allow=(">",), subscribe_allow=(">",))
    inbox = f"{inbox_prefix(public_key or '<key>')}.>"
    if role == "worker":
        assert worker_id is not None
        return _worker(topology, worker_id, inbox)
    if role == "join":
        if token_id is not None and not is_valid_id(token_id):
            raise ValueError(f"token id {token_id!r} may hold only letters, digits, '-' and '_'")
        return Permissions(publish_allow=(topology.command("join", "claim", token_id or "<token>"),),
                           publish_deny=MANAGEMENT,
                           subscribe_allow=(inbox,), subscribe_deny=(topology.all_events, topology.dispatch(">")))
    publish = _ROLE_PUBLISH[role](topology)
    subscribe = (inbox, *(_micro(topology, MICRO_OF.get(role, role)) if role in MICRO_OF or role in SERVICES
                          else ()))
    subscribe += _ROLE_SUBSCRIBE.get(role, lambda _t: ())(topology)
    publish_deny, subscribe_deny = _denials(topology, role)
    return Permissions(publish_allow=publish, publish_deny=publish_deny, subscribe_allow=subscribe,
                       subscribe_deny=subscribe_deny)


def _scheduler(t: Topology) -> tuple[str, ...]:
    return (*_appends(t, "scheduler"), *read_stream(t.events_stream), t.dispatch("*"),
            *_own_keys(t.lease_bucket, LEASES, "scheduler"), *_own_keys(t.snapshot_bucket, SNAPSHOTS, "scheduler"),
            f"{INBOX}.>")


def _discovery(t: Topology) -> tuple[str, ...]:
    return (*_appends(t, "discovery"), *read_stream(t.events_stream),
            *_own_keys(t.lease_bucket, LEASES, "discovery"), f"{INBOX}.>")


def _projector(t: Topology) -> tuple[str, ...]:
    return (*read_stream(t.events_stream), f"{INBOX}.>")


def _gateway(t: Topology) -> tuple[str, ...]:
    commands = tuple(t.command(s, v) for s, v in GATEWAY_COMMANDS)
    commands += tuple(t.command(s, v, "*") for s, v in GATEWAY_WORKER_COMMANDS)
    maps = object_stream(t.map_bucket)
    return (*_appends(t, "gateway"), *read_stream(t.events_stream), *read_stream(t.telemetry_stream),
            api("STREAM", "INFO", t.dispatch_stream), *commands, "$SRV.PING",
            # Maps: uploaded (chunks and metadata) and read back by direct gets.
            f"$O.{t.map_bucket}.C.>", f"$O.{t.map_bucket}.M.>", api("STREAM", "INFO", maps),
            api("STREAM", "MSG", "GET", maps), api("DIRECT", "GET", maps), api("DIRECT", "GET", maps, ">"))


def _monitor(t: Topology) -> tuple[str, ...]:
    return (*_appends(t, "monitor"), *read_stream(t.events_stream), api("STREAM", "INFO", t.telemetry_stream),
            t.host_samples("*"), *_own_keys(t.lease_bucket, LEASES, "monitor"),
            *(t.command(s, v) for s, v in MONITOR_COMMANDS), f"{INBOX}.>")


def _joins(t: Topology) -> tuple[str, ...]:
    return (*_appends(t, "joins"), *read_stream(t.events_stream), f"{INBOX}.>")


_ROLE_PUBLISH = {"scheduler": _scheduler, "discovery": _discovery, "projector": _projector, "gateway": _gateway,
                 "monitor": _monitor, "joins": _joins}
_ROLE_SUBSCRIBE = {"discovery": lambda t: (t.telemetry("heartbeat", "*"),),
                   "monitor": lambda t: (t.host_samples("*"), t.telemetry("heartbeat", "*"),
                                         t.job_telemetry("progress"))}


def _worker(t: Topology, worker_id: str, inbox: str) -> Permissions:
    stream, consumer, bucket = t.dispatch_stream, t.dispatch_consumer(worker_id), t.checkpoint_bucket
    objects, maps = object_stream(bucket), object_stream(t.map_bucket)
    commands = tuple(t.command(s, v, worker_id) for s, v in endpoints(from_worker=True))
    publish = (
        # A job's samples only on subjects that name this worker: NATS cannot know which jobs a worker runs,
        # so readers believe a sample only when the job was assigned to the worker its subject names.
        t.telemetry("heartbeat", worker_id), t.host_samples(worker_id), t.job_telemetry("progress", "*", worker_id),
        t.job_telemetry("episode", "*", worker_id),
        *commands,
        # Its own durable consumer: the filter is part of the subject, and the server checks the request's
        # filter against it, so a worker cannot make a consumer of another worker's queue.
        api("CONSUMER", "CREATE", stream, consumer, t.dispatch(worker_id)),
        api("CONSUMER", "MSG", "NEXT", stream, consumer), f"$JS.ACK.{stream}.{consumer}.>",
        api("STREAM", "INFO", stream), api("STREAM", "INFO", t.telemetry_stream),
        # Checkpoints: chunks and metadata in, and reading any of them back (a job resumes anywhere) by
        # direct gets. No consumer: a push consumer delivers where its creator says, and a worker writes this
        # bucket, so it could have its own bytes delivered to a command endpoint as if sent by the server.
        f"$O.{bucket}.C.>", f"$O.{bucket}.M.>", api("STREAM", "INFO", objects),
        api("STREAM", "MSG", "GET", objects), api("DIRECT", "GET", objects), api("DIRECT", "GET", objects, ">"),
        # Maps a job uses: read only, by direct gets.
        api("STREAM", "INFO", maps), api("STREAM", "MSG", "GET", maps), api("DIRECT", "GET", maps),
        api("DIRECT", "GET", maps, ">"),
    )
    publish_deny = (*MANAGEMENT, t.all_events, t.dispatch(">"), f"$KV.{t.lease_bucket}.>",
                    f"$KV.{t.snapshot_bucket}.>")
    subscribe_deny = (t.dispatch(">"), t.all_events, f"{t.prefix}.cmd.>")
    return Permissions(publish_allow=publish, publish_deny=publish_deny, subscribe_allow=(inbox,),
                       subscribe_deny=subscribe_deny)


def event_aggregates() -> set[str]:
    """Every aggregate kind an event of `contracts.events` belongs to."""
    return {cls.aggregate for cls in EVENT_TYPES.values()}


TABLE_WORKER_ID = "ID"


def identities(topology: Topology) -> list[tuple[str, Permissions]]:
    """Each identity with its permissions, as the table shows them (the worker as worker `ID`)."""
    out = [(role, permissions(role, topology)) for role in CONTROL_PLANE]
    out.append((f"worker `{TABLE_WORKER_ID}`", permissions("worker", topology, TABLE_WORKER_ID)))
    out.append(("join (a join token's own credential)", permissions("join", topology)))
    return out


def _cell(subjects: tuple[str, ...]) -> str:
    return "<br>".join(f"`{s}`" for s in subjects) if subjects else "—"


def permission_table(topology: Topology) -> str:
    """The permission table (markdown): identity → may publish / may subscribe, and what it is denied
    whatever its allow list says (JetStream management, the same for all, is listed once below the table)."""
    lines = ["| identity | may publish | may subscribe | denied publish | denied subscribe |",
             "|---|---|---|---|---|"]
    for name, perms in identities(topology):
        denied = tuple(p for p in perms.publish_deny if p not in MANAGEMENT)
        management = "JetStream management (¹)<br>" if set(MANAGEMENT) <= set(perms.publish_deny) else ""
        lines.append(f"| {name} | {_cell(perms.publish_allow)} | {_cell(perms.subscribe_allow)} | "
                     f"{management}{_cell(denied)} | {_cell(perms.subscribe_deny)} |")
    management_list = ", ".join(f"`{p}`" for p in MANAGEMENT)
    lines += ["", f"(¹) JetStream management, denied to every identity but admin: {management_list}.",
              f"`<key>` is the user's own public nkey; a worker's rows are shown for worker id `{TABLE_WORKER_ID}`, "
              "a join token's for token `<token>`."]
    return "\n".join(lines) + "\n"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a NATS subject pattern (`*` one token, `>` the rest) matches a subject."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def allows(perms: Permissions, subject: str, *, publish: bool = True) -> bool:
    """Whether these permissions let a client publish (or subscribe) to `subject`, as nats-server decides:
    some allow pattern matches and no deny pattern does."""
    allow, deny = (perms.publish_allow, perms.publish_deny) if publish else (perms.subscribe_allow,
                                                                             perms.subscribe_deny)
    return any(subject_matches(p, subject) for p in allow) and not any(subject_matches(p, subject) for p in deny)
