"""What the multi-process benches share: an authenticated nats-server and the platform's services as processes.

bench/dispatch.py keeps its own two-worker start-up; a bench that needs workers of its own (names, labels,
slots) starts them here: `Platform(base, workers)` with `workers` mapping each worker id to its env settings
(`STOKER_TRAINER_*` without the prefix: `{"LABELS": '["training"]', "SLOTS": "2"}`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.credentials import CredentialStore
from eventstore.log import JetStreamLog
from eventstore.server import NatsServer, ServerSpec, free_port

ROOT = Path(__file__).resolve().parent.parent
CONTROL = (("scheduler", "services.scheduler"), ("discovery", "services.discovery"))


class Platform:
    """nats-server with the platform's users, the scheduler, discovery and the named workers."""

    def __init__(self, base: Path, workers: dict[str, dict[str, str]], prefix: str = "bench") -> None:
        self.base, self.workers, self.prefix = base, workers, prefix
        self.topology = Topology(prefix)
        self.credentials = CredentialStore(base)
        self.server: NatsServer | None = None
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def admin(self) -> Path:
        """The admin credential the bench itself connects with."""
        return self.credentials.role_path("admin")

    async def start(self) -> None:
        """Credentials, the server, the streams, then every service process."""
        self.credentials.ensure_control_plane()
        for worker in self.workers:
            self.credentials.ensure_worker(worker)
        self.credentials.write_authorization(self.topology)
        self.server = NatsServer(ServerSpec(store_dir=self.base / "nats" / "jetstream", port=free_port(),
                                            http_port=free_port(), auth_file=self.credentials.authorization_path))
        await self.server.start()
        setup = await connect(self.server.url, "bench-setup", credentials=self.admin)
        await JetStreamLog(setup, self.topology).ensure_streams()
        await setup.close()
        for name, module in CONTROL:
            self._spawn(name, module, {"STOKER_NATS_CREDENTIALS": str(self.credentials.role_path(name))})
        for worker, settings in self.workers.items():
            self.start_worker(worker, settings)

    def start_worker(self, worker: str, settings: dict[str, str]) -> None:
        """One worker agent process with its own credential and settings."""
        extra = {f"STOKER_TRAINER_{k}": v for k, v in settings.items()}
        extra.update(STOKER_TRAINER_WORKER_ID=worker, STOKER_TRAINER_DETECT_GPUS="false",
                     STOKER_NATS_CREDENTIALS=str(self.credentials.worker_path(worker)))
        self._spawn(worker, "services.trainer", extra)

    def _spawn(self, name: str, module: str, extra: dict[str, str]) -> None:
        assert self.server is not None
        env = {**os.environ, "STOKER_NATS_URL": self.server.url, "STOKER_PREFIX": self.prefix,
               "STOKER_DATA_DIR": str(self.base / "data" / name),
               "STOKER_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"), "STOKER_LOG_FORMAT": "json",
               "PYTHONPATH": str(ROOT), **extra}
        logs = self.base / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=out,
                                                stderr=out, start_new_session=True)

    def kill(self, name: str) -> None:
        """SIGKILL one service and everything in its session (a worker's job processes too): a machine dying."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def stop(self) -> None:
        """End every process and the server."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        self.procs.clear()
        if self.server is not None:
            self.server.stop()
