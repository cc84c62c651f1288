"""`stoker up`, `stoker run SERVICE`, `stoker worker`: running the platform."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click
import msgspec

from contracts.subjects import Topology
from eventstore.config import CommonSettings, ConfigError, NatsSettings, load_settings
from eventstore.connect import connect
from eventstore.credentials import CredentialError, CredentialStore, local_worker_id
from eventstore.fleet import is_node, node_name, node_tls
from eventstore.follow import cancel_and_wait
from eventstore.lifeline import open_lifeline
from eventstore.log import JetStreamLog
from eventstore.observability import configure_logging
from eventstore.pki import (
    ServerTls,
    decide_tls,
    ensure_server_tls,
    is_loopback,
    machine_names,
    planned_server_tls,
    short_fingerprint,
)
from eventstore.sdnotify import Notifier
from eventstore.server import (
    EXIT_NATS_KILLED,
    NatsServer,
    NoPlatform,
    cluster_nodes,
    embedded_node,
    free_port,
    peer_node,
    port_is_free,
    write_record,
)
from eventstore.service import EXIT_NATS_REFUSED, EXIT_NATS_UNREACHABLE
from gateway.bootstrap import bootstrap_tokens
from gateway.settings import GatewaySettings
from gateway.settings import load as load_gateway_settings
from ops import ports
from ops.cli import Cli, pass_cli
from ops.joining import platform_id
from ops.lock import AlreadyRunning, DataDirLock
from ops.members import follow_members
from ops.phone import follow_phone_links
from ops.portchoice import PortChoice
from ops.runstate import HEALTH_PATH, gateway_health, health_summary, state_path, write_state
from ops.supervisor import (
    Launch,
    ProcessSpec,
    StartupFailed,
    Supervised,
    Supervisor,
    describe_exit,
    python_module,
)

# Control-plane services in start order, with the module that runs each; absent ones are skipped.
SERVICES = [
    ("projector", "services.projector", 8),
    ("discovery", "services.discovery", 7),
    ("scheduler", "services.scheduler", 6),
    ("monitor", "services.monitor", 3),  # samples this machine and decides alerts for all (role alert)
    ("gateway", "gateway", 4),
]
WORKER_MODULE = "services.trainer"
MONITOR_MODULE = "services.monitor"
JOIN_DESK_MODULE = "ops.joindesk"  # claims of join tokens; only where other machines can reach NATS (with TLS)
CREDENTIALS_ENV = "STOKER_NATS_CREDENTIALS"
NATS_STOP_RANK = 99  # after every service: they need it to checkpoint and report while they stop
NATS_BACK_S = 5.0  # at a stop, how long NATS may take to come back before the services stop without it
GRACE_WITHOUT_NATS_S = 5.0


def module_runs(module: str) -> bool:
    """Whether `python -m module` exists in this installation."""
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ModuleNotFoundError:
        return False


class Identity(msgspec.Struct, frozen=True):
    """The part of the trainer's settings (`[trainer]`, STOKER_TRAINER_*) that names the local worker."""

    worker_id: str = ""


def process_specs(nats_url: str, settings: CommonSettings, replicas: int, worker_id: str | None,
                  credentials: CredentialStore, tls: ServerTls | None = None,
                  lan: dict[str, str] | None = None, join_desk: bool = True) -> list[ProcessSpec]:
    """What `stoker up` supervises: each available service, and a local worker (`worker_id`), each with the
    credential of its role (and the join desk, where other machines can reach NATS: with TLS, and only on the
    machine that holds the CA key: `join_desk`). `lan` is what discovery is told about where NATS and the
    gateway listen (`lan_env`), for its mDNS record."""
    env = {"STOKER_NATS_URL": nats_url, "STOKER_DATA_DIR": str(settings.data_path),
           "STOKER_REPLICAS": str(replicas), "STOKER_LOG_FORMAT": "json"}
    if tls is not None:
        env["STOKER_NATS_CA"] = str(tls.ca_file)
    specs = [python_module(name, module, {**env, CREDENTIALS_ENV: str(credentials.role_path(name)),
                                          **((lan or {}) if name == "discovery" else {})}, rank)
             for name, module, rank in SERVICES if module_runs(module)]
    if tls is not None and join_desk:
        desk_env = {**env, CREDENTIALS_ENV: str(credentials.role_path("joins"))}
        specs.append(python_module("joins", JOIN_DESK_MODULE, desk_env, stop_rank=2))
    if worker_id is not None and module_runs(WORKER_MODULE):
        worker_env = {**env, CREDENTIALS_ENV: str(credentials.worker_path(worker_id)),
                      "STOKER_TRAINER_WORKER_ID": worker_id}
        specs.append(python_module("worker", WORKER_MODULE, worker_env, stop_rank=1, grace=60.0))
    return specs


def lan_env(nodes: list[NatsServer], tls: bool, gateway: GatewaySettings | None, platform: str) -> dict[str, str]:
    """Discovery's STOKER_DISCOVERY_* variables: where NATS and the gateway listen, the platform's id (issue 14)."""
    env = {"STOKER_DISCOVERY_NATS_LISTEN": nodes[0].spec.host,
           "STOKER_DISCOVERY_NATS_PORTS": msgspec.json.encode([n.spec.port for n in nodes]).decode(),
           "STOKER_DISCOVERY_NATS_SCHEME": "tls" if tls else "nats", "STOKER_DISCOVERY_PLATFORM_ID": platform}
    if gateway is not None:
        env |= {"STOKER_DISCOVERY_GATEWAY_LISTEN": gateway.host, "STOKER_DISCOVERY_GATEWAY_PORT": str(gateway.port)}
    return env


def local_worker(settings: CommonSettings) -> str:
    """The id of `stoker up`'s own worker: configured (`[trainer] worker_id`), kept, or derived and kept."""
    configured = load_settings(Identity, "trainer").worker_id
    return local_worker_id(configured, settings.data_path, socket.gethostname())


def secure_data_dir(data: Path) -> None:
    """The data dir and its logs: 0700, every log 0600; what the platform creates from now on is private."""
    os.umask(0o077)
    for directory in (data, data / "logs"):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
    for log_file in (data / "logs").glob("*.log"):
        os.chmod(log_file, 0o600)


def nats_specs(nodes: list[NatsServer], log_dir: Path) -> list[ProcessSpec]:
    """Each NATS node as a supervised process (through its keeper), stopped after everything else."""
    names = ["nats"] if len(nodes) == 1 else [f"nats-{i}" for i in range(len(nodes))]
    return [ProcessSpec(name, node.keeper_argv(log_dir / f"{name}.log"), stop_rank=NATS_STOP_RANK, grace=20.0,
                        infrastructure=True) for name, node in zip(names, nodes, strict=True)]


def gateway_address(host: str, port: int) -> str:
    """Where a client on this machine reaches a gateway bound to host:port."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


class SafeStream:
    """stdout/stderr of `stoker up`: quiet (not an error) once nobody reads them, copied to a log file.

    A closed pipe (`stoker up | tee` after Ctrl-C) or a closed terminal must never stop a shutdown half way.
    """

    def __init__(self, stream: TextIO, copy: TextIO | None) -> None:
        self._stream, self._copy, self._lost = stream, copy, False

    def write(self, text: str) -> int:
        if self._copy is not None:
            with contextlib.suppress(OSError, ValueError):
                self._copy.write(_ANSI.sub("", text))
                self._copy.flush()
        if not self._lost:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._go_quiet()
        return len(text)

    def flush(self) -> None:
        if not self._lost:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._go_quiet()

    def isatty(self) -> bool:
        return not self._lost and self._stream.isatty()

    def _go_quiet(self) -> None:
        # Point the fd at /dev/null: what is still buffered, and the interpreter's flush at exit, go nowhere.
        self._lost = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def protect_output(log_path: Path) -> None:
    """Make stdout and stderr safe to write whatever happens to the terminal (see SafeStream)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    copy = log_path.open("a", encoding="utf-8")
    sys.stdout = SafeStream(sys.stdout, copy)  # type: ignore[assignment]
    sys.stderr = SafeStream(sys.stderr, copy)  # type: ignore[assignment]


def say(text: str, err: bool = False) -> None:
    """A line for the person at the terminal."""
    click.echo(text, file=sys.stderr if err else sys.stdout)


class Up:
    """One run of `stoker up`: the lock, NATS, the supervised processes, and how they are started and stopped."""

    def __init__(self, cli: Cli, port: int, cluster: int, with_worker: bool, start_timeout: float,
                 nats: NatsSettings | None = None, peers: tuple[str, ...] = (), cluster_port: int = 6222) -> None:
        self.settings = cli.settings
        self.data = self.settings.data_path
        self.logs = self.data / "logs"
        self.start_timeout = start_timeout
        self.nats = nats or NatsSettings()
        # An imported node (eventstore.fleet) has the certificate the first machine issued it; elsewhere it is
        # made (or renewed) once the data dir is ours; here only where it will be.
        self.imported = is_node(self.data)
        if self.imported:
            self.tls: ServerTls | None = node_tls(self.data)
        else:
            mode = "on" if peers and self.nats.tls == "auto" else self.nats.tls  # routes cross the network
            self.tls = (planned_server_tls(self.data, machine_names(self.nats.listen, self.nats.names))
                        if decide_tls(self.nats.listen, mode) else None)
        self.credentials = CredentialStore(self.data)
        auth = self.credentials.authorization_path
        # A configured port another program holds: say which, take another (kept in the data dir: ops.ports).
        self.port_choices: list[PortChoice] = []
        if peers:
            if cluster > 1:
                raise ValueError("--peer runs this machine's node of a cluster across machines; --cluster 3 a "
                                 "local one: choose one")
            own = node_name(self.data) if self.imported else _host_label(socket.gethostname())
            http_port = 8222 if port_is_free(8222) else free_port()
            self.nodes = [peer_node(self.data, peers, name=own, host=self.nats.listen, port=port,
                                    cluster_port=cluster_port, http_port=http_port, tls=self.tls, auth_file=auth)]
        elif cluster > 1:
            self.nodes = cluster_nodes(self.data / "nats-cluster", cluster, host=self.nats.listen, tls=self.tls,
                                       auth_file=auth)
        else:
            self.port_choices.append(ports.choose(self.data, "nats", port, self.nats.listen))
            self.nodes = [embedded_node(self.data, port=self.port_choices[-1].port, host=self.nats.listen,
                                        tls=self.tls, auth_file=auth)]
        self.nats_url = ",".join(n.url for n in self.nodes)
        self.replicas = 3 if cluster > 1 or peers else self.settings.replicas
        self.gateway: GatewaySettings | None = load_gateway_settings().gateway if module_runs("gateway") else None
        if self.gateway is not None:
            self.port_choices.append(ports.choose(self.data, "gateway", self.gateway.port, self.gateway.host))
            self.gateway = msgspec.structs.replace(self.gateway, port=self.port_choices[-1].port)
        self.gateway_url = gateway_address(self.gateway.host, self.gateway.port) if self.gateway else None
        self.phase = "starting"
        self.with_worker = with_worker
        self.specs: list[ProcessSpec] = []
        self.state = "starting"
        self.lock = DataDirLock(self.data)
        self.supervisor: Supervisor | None = None
        self.stop = asyncio.Event()
        self.signal_name = ""
        self.notifier = Notifier(None)  # the service manager's, once run() takes it from the environment
        self.login_token = ""
        self.members: asyncio.Task | None = None  # ops.members, on a node of a cluster across machines

    def _prepare_credentials(self) -> None:
        """A credential per role and for the local worker (made once, reused), the `authorization` block every
        node includes, the route password of a cluster, and the supervised processes with their credentials."""
        self.credentials.ensure_control_plane()
        worker_id = local_worker(self.settings) if self.with_worker and module_runs(WORKER_MODULE) else None
        if worker_id is not None:
            self.credentials.ensure_worker(worker_id)
        self.credentials.write_authorization(Topology(self.settings.prefix))
        if any(node.spec.cluster_port is not None for node in self.nodes):
            secret = self.credentials.route_secret()
            for node in self.nodes:
                node.spec.route_secret = secret
        lan = lan_env(self.nodes, self.tls is not None, self.gateway, platform_id(self.data))
        self.specs = process_specs(self.nats_url, self.settings, self.replicas, worker_id, self.credentials,
                                   self.tls, lan, join_desk=not self.imported)
        for spec in self.specs:
            if spec.name == "gateway" and self.gateway is not None:
                spec.env["STOKER_GATEWAY_PORT"] = str(self.gateway.port)  # the port actually chosen

    def holder_info(self) -> dict[str, Any]:
        """What the lock file says about us."""
        return {"pid": os.getpid(), "gateway": self.gateway_url, "nats": self.nats_url, "state": self.state}

    def write_state(self) -> None:
        """The state file `stoker status` reads (and `stoker firewall`, and mDNS: the ports actually used)."""
        write_state(self.data, {"pid": os.getpid(), "state": self.state, "nats": self.nats_url,
                                "gateway": self.gateway_url, "updated_at": time.time(),
                                "listeners": self.listeners(),
                                "processes": self.supervisor.snapshot() if self.supervisor else []})

    def listeners(self) -> list[dict[str, Any]]:
        """What this platform listens on: name, bound host, port (and, where moved, the configured port and who
        holds it)."""
        moved = {c.name: c for c in self.port_choices if c.moved}
        out: list[dict[str, Any]] = []
        if self.gateway is not None:
            out.append({"name": "gateway", "host": self.gateway.host, "port": self.gateway.port})
        for i, node in enumerate(self.nodes):
            spec = node.spec
            out.append({"name": "nats" if len(self.nodes) == 1 else f"nats-{i}", "host": spec.host,
                        "port": spec.port})
            if spec.cluster_port is not None:  # routes listen beyond loopback only towards peers of other machines
                out.append({"name": f"nats-route-{i}", "host": spec.host if spec.peers else "127.0.0.1",
                            "port": spec.cluster_port})
        for listener in out:
            if listener["name"] in moved:
                listener |= {"wanted": moved[listener["name"]].wanted, "holder": moved[listener["name"]].holder}
        return out

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            with contextlib.suppress(Exception):
                say("stoker: still stopping (running jobs are saving a checkpoint)…", err=True)
            return
        self.signal_name = sig.name
        self.stop.set()

    async def run(self) -> int:
        """The whole life of `stoker up`; returns its exit code."""
        secure_data_dir(self.data)
        # Under systemd (Type=notify) only this process speaks for the unit: the children must not inherit it.
        self.notifier = Notifier.from_environment(unset=True)
        try:
            self.lock.acquire(self.holder_info())
        except AlreadyRunning as exc:
            say(str(exc), err=True)
            return 1
        with contextlib.suppress(OSError):  # a choice not kept is only chosen again next time
            ports.record(self.data, self.port_choices)
        protect_output(self.logs / "supervisor.log")
        configure_logging("supervisor", self.settings.log_format, self.settings.log_level)
        try:
            self._prepare_credentials()
        except (CredentialError, ValueError, OSError) as exc:
            say(f"stoker: cannot prepare the NATS credentials in {self.credentials.root}: {exc}", err=True)
            self.lock.release()
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        read_fd, write_fd = open_lifeline()
        try:
            specs = nats_specs(self.nodes, self.logs) + self.specs
            launch = Launch(lifeline_fd=read_fd, state_file=state_path(self.data), lock_fd=self.lock.fd)
            self.supervisor = Supervisor(specs, self.logs, launch, self.write_state)
            code = await self._start_and_wait()
            stopped_clean = await self._shutdown()
            return code if code or stopped_clean else 1
        finally:
            self.state = "stopped"
            with contextlib.suppress(OSError):
                self.write_state()
            os.close(write_fd)
            os.close(read_fd)
            self.lock.release()

    async def _start_and_wait(self) -> int:
        """Start everything, say so once the gateway answers, and wait for a signal; the exit code so far."""
        assert self.supervisor is not None
        startup = asyncio.create_task(self._start())
        failure = self.supervisor.startup_failure()
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({startup, failure, stopper}, timeout=self.start_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if startup in done and startup.exception() is None:
            self.supervisor.mark_up()
            self.state = "up"
            self.lock.update(self.holder_info())
            self.write_state()
            say(startup.result())
            self.notifier.ready(f"up: the gateway's health answers at {self.gateway_url}" if self.gateway_url
                                else "up")
            watchdog = self.notifier.start_watchdog()
            phone = self._follow_phone_links()
            await self.stop.wait()
            await cancel_and_wait([task for task in (watchdog, phone, self.members) if task is not None])
            return 0
        startup.cancel()
        await asyncio.gather(startup, return_exceptions=True)
        if self.members is not None:
            await cancel_and_wait([self.members])
        if failure.done():
            self._say_failed(failure.result())
        elif startup in done:
            say(f"stoker: could not start ({self.phase}): {startup.exception()}", err=True)
        elif self.stop.is_set():
            say(f"stoker: {self.signal_name or 'signal'} before the platform was up; stopping what started", err=True)
            return 130 if self.signal_name == "SIGINT" else 1
        else:
            self._say_not_up()
        return 1

    async def _start(self) -> str:
        """NATS, the streams, the admin token, every service, and the gateway's health: the banner."""
        assert self.supervisor is not None
        if self.tls is not None and not self.imported:
            self.phase = "making the TLS certificate"
            self.tls = await asyncio.to_thread(ensure_server_tls, self.data, self.tls.names)
        self.phase = "starting NATS"
        await self.supervisor.start(lambda s: s.infrastructure)
        keepers = self.supervisor.select(lambda s: s.infrastructure)
        await asyncio.gather(*(node.wait_healthy(self.start_timeout, exited=_exit_code(keeper))
                               for node, keeper in zip(self.nodes, keepers, strict=True)))
        write_record(self.data, self.nodes[0], self.nats_url, pid=os.getpid(), nodes=self.nodes)
        self.phase = "creating the streams"
        nc = await connect(self.nats_url, "stoker-up", credentials=self.credentials.role_path("admin"),
                           ca_file=str(self.tls.ca_file) if self.tls else None)
        try:
            event_log = JetStreamLog(nc, Topology(self.settings.prefix))
            await event_log.ensure_streams(self.replicas)
            tokens, self.login_token = await bootstrap_tokens(event_log, self.data)
        finally:
            await nc.close()
        self.members = self._follow_members()
        self.phase = "starting the services"
        await self.supervisor.start()
        if self.gateway_url is not None:
            self.phase = "waiting for the gateway's health"
            await self._wait_for_gateway()
        return self._banner(tokens)

    def _follow_members(self) -> asyncio.Task | None:
        """On a node of a cluster across machines: let in who the log says, for the life of the platform
        (ops.members), so a worker admitted or revoked on any node is admitted or revoked on this one."""
        if not any(node.spec.peers for node in self.nodes):
            return None
        ca = str(self.tls.ca_file) if self.tls else None
        # Where the join desk runs (not on an imported node), it keeps the join tokens' own credentials.
        return asyncio.create_task(follow_members(
            self.nats_url, str(self.credentials.role_path("admin")), ca, self.settings.prefix, self.data,
            joins=self.imported), name="members")

    def _follow_phone_links(self) -> asyncio.Task | None:
        """Where the gateway listens beyond loopback: the phone link and QR code now, and at each address change."""
        if self.gateway is None or is_loopback(self.gateway.host) or not self.login_token:
            return None
        ca = str(self.tls.ca_file) if self.tls else None
        return asyncio.create_task(follow_phone_links(
            self.nats_url, str(self.credentials.role_path("admin")), ca, self.settings.prefix, self.gateway,
            self.login_token, say), name="phone-link")

    async def _wait_for_gateway(self) -> None:
        assert self.gateway_url is not None
        while True:
            status, _body, _why = await asyncio.to_thread(gateway_health, self.gateway_url, 2.0)
            if status == 200:
                return
            await asyncio.sleep(0.25)

    def _say_not_up(self) -> None:
        """Why the platform is not up at the deadline, with the end of the log of what is to blame."""
        assert self.supervisor is not None
        suspects: list[Supervised] = []
        if self.phase == "waiting for the gateway's health" and self.gateway_url is not None:
            status, body, why = gateway_health(self.gateway_url, 2.0)
            if status is None:
                reason = f"the gateway at {self.gateway_url} does not answer ({why})"
                suspects = self.supervisor.select(lambda s: s.name == "gateway")
            else:
                reason = f"the gateway's health at {self.gateway_url}{HEALTH_PATH} says {health_summary(body)}"
                silent = {s.get("name") for s in (body or {}).get("services", []) if not s.get("up")}
                suspects = self.supervisor.select(lambda s: s.name in silent)
        else:
            reason = f"still {self.phase}"
            if self.phase == "starting NATS":
                suspects = self.supervisor.select(lambda s: s.infrastructure)
        lines = [f"stoker: the platform was not up within {self.start_timeout:g} s: {reason}"]
        for child in suspects:
            lines.append(f"the end of {child.log_path}:")
            lines += [f"  | {line}" for line in child.log_tail(8)]
        say("\n".join(lines), err=True)

    def _say_failed(self, failed: StartupFailed) -> None:
        child = failed.child
        lines = [f"stoker: {child.spec.name} failed to start ({describe_exit(failed.code)}); "
                 f"the end of {child.log_path}:"]
        lines += [f"  | {line}" for line in child.log_tail()]
        say("\n".join(lines), err=True)

    def _banner(self, tokens: str) -> str:
        names = ", ".join(s.name for s in self.specs) or "none yet"
        lines = ["stoker is up."]
        if self.gateway_url is not None:
            lines.append(f"  gateway:           {self.gateway_url}  (health answers)")
        else:
            lines.append("  gateway:           not part of this installation yet (projections and log only)")
        lines.append(f"  NATS (JetStream):  {self.nats_url}")
        lines += [f"  port moved:        {c.explain()} (kept in {self.data / ports.PORTS_FILE})"
                  for c in self.port_choices if c.moved]
        opened = [f"{item['name']} {item['port']}" for item in self.listeners() if not is_loopback(item["host"])]
        if opened:
            lines.append(f"  firewall:          `sudo stoker firewall apply` opens {', '.join(opened)} to the LAN "
                         "(`stoker firewall plan` shows how)")
        if self.tls is not None:
            ca = short_fingerprint(self.tls.fingerprint)
            lines += [f"  NATS listens on:   {self.nats.listen}, TLS only, CA {ca}",
                      "  a new machine:     `stoker join-token create` here, then `stoker worker --join TOKEN` there"]
        lines += [
            f"  data:              {self.data}",
            f"  logs:              {self.logs}",
            f"  processes:         {names}",
            tokens,
            "Look inside: stoker status · stoker events tail --follow   ·   Ctrl-C stops everything cleanly.",
        ]
        return "\n".join(lines)

    async def _shutdown(self) -> bool:
        """Stop the services, then NATS; say what is known to be safe. True when nothing is in doubt."""
        supervisor = self.supervisor
        assert supervisor is not None
        if all(c.process is None for c in supervisor.children):
            return True  # nothing was started
        self.state = "stopping"
        self.write_state()
        self.notifier.stopping("stopping: running jobs checkpoint and go back to the queue")
        say("stoker: stopping (running jobs checkpoint and go back to the queue)…", err=True)
        services = supervisor.select(lambda s: not s.infrastructure)
        keepers = supervisor.select(lambda s: s.infrastructure)
        started = [c for c in services if c.process is not None]
        nats_ok = not started or await self._nats_back(keepers)
        restarts = sum(k.restarts for k in keepers)
        # Without NATS the services can neither save nor report anything: no point in the order, or in waiting
        # out their full grace.
        await supervisor.stop(lambda s: not s.infrastructure, None if nats_ok else GRACE_WITHOUT_NATS_S,
                              ordered=nats_ok)
        nats_ok = nats_ok and sum(k.restarts for k in keepers) == restarts and await self._nats_healthy()
        await supervisor.stop()
        # Before the platform was up, a process that had already failed is not a doubt: it was said.
        doubts = [f"{c.spec.name}: {explain(c)}" for c in started
                  if c.outcome != "clean" and (supervisor.up or not (c.outcome or "").startswith("was down"))]
        if started and not nats_ok:
            doubts.append("NATS was down during the stop: the last checkpoints and reports may not have reached "
                          "it (a worker resends what it kept on disk when it starts again)")
        doubts += [f"{k.spec.name}: {explain(k)}" for k in keepers if k.process is not None
                   and k.outcome != "clean" and (supervisor.up or not (k.outcome or "").startswith("was down"))]
        if not doubts:
            say("stoker: stopped; nothing was lost (every service stopped cleanly, NATS was up to the end).", err=True)
            return True
        say("stoker: stopped, but not everything is known to be safe:\n" + "\n".join(f"  - {d}" for d in doubts),
            err=True)
        return False

    async def _nats_back(self, keepers: list[Supervised]) -> bool:
        """Whether NATS is up, bringing it back at once if it is down (waits a few seconds at most)."""
        assert self.supervisor is not None
        if await self._nats_healthy():
            return True
        self.supervisor.restart_infrastructure()
        deadline = time.monotonic() + NATS_BACK_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if all(k.running for k in keepers) and await self._nats_healthy():
                return True
        return False

    async def _nats_healthy(self) -> bool:
        results = await asyncio.gather(*(node.healthy() for node in self.nodes))
        return all(results)


def _host_label(hostname: str) -> str:
    """This machine's node name: its host name's first label, as a server name takes it."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", hostname.split(".")[0]).strip("-")[:48] or "node"


def _exit_code(child: Supervised) -> Callable[[], int | None]:
    return lambda: child.process.returncode if child.process is not None else None


def explain(child: Supervised) -> str:
    """How a process ended, in terms of what it means for its work."""
    outcome = child.outcome or "unknown"
    if child.spec.infrastructure and outcome == f"exit {EXIT_NATS_KILLED}":
        return "nats-server did not stop on SIGTERM and was killed (JetStream recovers its store at the next start)"
    if outcome == f"exit {EXIT_NATS_UNREACHABLE}":
        return "stopped without NATS: its last reports may not have been delivered"
    if outcome == f"exit {EXIT_NATS_REFUSED}":
        return "NATS refused its credential (revoked, or the platform's users changed): see its log"
    if outcome.startswith("killed after") and child.spec.name == "worker":
        return f"{outcome}: its running jobs go back to the queue from their last checkpoint once it is seen gone"
    if outcome.startswith("killed after"):
        return f"{outcome} (did not stop in time)"
    return outcome


@click.command("up")
@click.option("--port", default=4222, show_default=True, help="NATS client port (a free one if taken).")
@click.option("--cluster", type=click.Choice(["1", "3"]), default="1", help="Run a local 3-node NATS cluster.")
@click.option("--listen", help="Address NATS listens on (default 127.0.0.1; 0.0.0.0: the LAN, with TLS).")
@click.option("--tls", is_flag=True, help="TLS under stoker's CA even on loopback (always on beyond it).")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
              help="Another machine's NATS node (its cluster port), e.g. host2:6222 (repeatable): this machine runs "
              "its node of a cluster across machines, with TLS and R3 streams (docs/security.md).")
@click.option("--cluster-port", type=click.IntRange(1, 65535), default=6222, show_default=True,
              help="With --peer: the port this node's routes listen on.")
@click.option("--no-worker", is_flag=True, help="Do not start a local worker.")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              envvar="STOKER_START_TIMEOUT_S", help="Seconds to wait for the gateway's health before giving up.")
@pass_cli
def up(cli: Cli, port: int, cluster: str, listen: str | None, tls: bool, peers: tuple[str, ...], cluster_port: int,
       no_worker: bool, start_timeout: float) -> None:
    """Start embedded NATS, every service and a local worker; Ctrl-C stops them all cleanly.

    Exits 0 after a clean stop; 1 when the data dir is in use, when something failed to start, or when a
    stop could not confirm that nothing was lost.
    """
    try:
        nats = load_settings(NatsSettings, "nats", overrides={"listen": listen, "tls": "on" if tls else None})
        platform = Up(cli, port, int(cluster), not no_worker, start_timeout, nats, peers, cluster_port)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(asyncio.run(platform.run()))


@click.command("run")
@click.argument("service")
@pass_cli
def run(cli: Cli, service: str) -> None:
    """Run one service in the foreground (scheduler, discovery, projector, gateway, trainer, …)."""
    modules = {name: module for name, module, _rank in SERVICES} | {"trainer": WORKER_MODULE,
                                                                    "worker": WORKER_MODULE}
    module = modules.get(service)
    if module is None or not module_runs(module):
        known = sorted(name for name, m in modules.items() if module_runs(m))
        raise click.BadParameter(f"unknown service {service!r}; this installation has: {', '.join(known)}")
    _run_module(cli, module, None if module == WORKER_MODULE else service)


def _run_module(cli: Cli, module: str, role: str | None = None) -> None:
    try:
        os.environ.setdefault("STOKER_NATS_URL", cli.nats_url)
    except NoPlatform as exc:
        raise click.ClickException(str(exc)) from None
    os.environ.setdefault("STOKER_DATA_DIR", str(cli.settings.data_path))
    if cli.settings.nats_credentials:
        os.environ.setdefault(CREDENTIALS_ENV, cli.settings.nats_credentials)
    elif role is not None and role != "trainer":
        # On the control plane, a service run by hand connects as its role, as under `stoker up`.
        own = CredentialStore(cli.settings.data_path).role_path(role)
        with contextlib.suppress(OSError):
            if own.exists():
                os.environ.setdefault(CREDENTIALS_ENV, str(own))
    entry = importlib.import_module(f"{module}.__main__")
    entry.cli_main()


def register(group: click.Group) -> None:
    """Add `stoker up` and `stoker run`."""
    group.add_command(up)
    group.add_command(run)
