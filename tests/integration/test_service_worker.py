"""A worker under a service manager: READY=1 once registered, STOPPING=1 on SIGTERM; and when the GPUs
recorded at install are missing, an alert and no registration (rather than work on the CPU)."""

from __future__ import annotations

import asyncio
import signal

import msgspec

from contracts.events import Gpu, WorkerRegistered
from eventstore.server import reload_nats
from tests.integration import test_trainer_platform as shared
from tests.integration.test_trainer_platform import Platform, pytestmark, wait_event  # noqa: F401
from tests.notify_listener import NotifyListener

# The authenticated platform of the worker tests (their fixtures, shared by name).
secured, nats_server, nc, platform = shared.secured, shared.nats_server, shared.nc, shared.platform


async def worker_under_manager(running: Platform, worker_id: str, listener: NotifyListener, gpus: list[Gpu],
                               **extra: str):
    """A worker agent process as a Type=notify unit starts it, with a GPU record as install writes it."""
    record = running.base / f"{worker_id}-gpus.json"
    record.write_bytes(msgspec.json.encode(gpus))
    credential = running.credentials.ensure_worker(worker_id)
    running.credentials.write_authorization(running.topology)
    await reload_nats(running.credentials.root.parent)
    return running.start(worker_id, "services.trainer", STOKER_TRAINER_WORKER_ID=worker_id,
                         STOKER_TRAINER_HEARTBEAT_S="0.3", STOKER_TRAINER_STOP_GRACE_S="5",
                         STOKER_DATA_DIR=str(running.base / worker_id), STOKER_NATS_CREDENTIALS=str(credential),
                         STOKER_TRAINER_EXPECTED_GPUS_FILE=str(record), WATCHDOG_USEC="2000000",
                         **listener.env, **extra)


async def wait_for(listener: NotifyListener, key: str, value: str | None = None, timeout: float = 60.0):
    """`listener.wait_for` off the event loop (the test's NATS connection keeps answering)."""
    return await asyncio.to_thread(listener.wait_for, key, value, timeout)


async def test_a_worker_says_ready_once_registered_pings_the_watchdog_and_says_stopping(platform, event_log):
    listener = NotifyListener()
    try:
        proc = await worker_under_manager(platform, "svc-w1", listener, [], STOKER_TRAINER_DETECT_GPUS="false")
        ready = await wait_for(listener, "READY", "1", timeout=60)
        assert ready.pid == proc.pid and "worker svc-w1 registered" in ready.fields["STATUS"]
        await wait_event(event_log, "worker", "svc-w1", lambda s: isinstance(s.event, WorkerRegistered))
        await wait_for(listener, "WATCHDOG", "1", timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert (await wait_for(listener, "STOPPING", "1", timeout=30)).pid == proc.pid
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        listener.close()


async def test_missing_gpus_raise_an_alert_and_the_worker_does_not_register_on_the_cpu(platform, event_log):
    listener = NotifyListener()
    h200 = Gpu(index=0, name="NVIDIA H200", memory_mb=143771)  # this machine has no GPU: the driver "did not load"
    try:
        proc = await worker_under_manager(platform, "svc-w2", listener, [h200], STOKER_TRAINER_DETECT_GPUS="true",
                                          STOKER_TRAINER_GPU_ALERT_AFTER_S="0")
        alert = await wait_for(listener, "STATUS", timeout=60)
        while not alert.fields["STATUS"].startswith("ALERT"):
            alert = await asyncio.to_thread(_next_status, listener)
        assert "GPUs missing: expected 1 x NVIDIA H200" in alert.fields["STATUS"] and alert.pid == proc.pid
        assert "not starting on the CPU" in alert.fields["STATUS"]
        extend = await wait_for(listener, "EXTEND_TIMEOUT_USEC", timeout=30)
        assert int(extend.fields["EXTEND_TIMEOUT_USEC"]) > 0
        # The check comes before the registration: up to the alert nothing said ready, nothing registered.
        assert not any("READY" in n.fields for n in listener.notices)
        assert not await event_log.has_events(event_log.topology.events("worker", "svc-w2"))
        log = await asyncio.to_thread((platform.base / "logs" / "svc-w2.log").read_text)
        assert "ALERT: GPUs missing" in log and '"alert": "gpu_missing"' in log
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        listener.close()


def _next_status(listener: NotifyListener):
    while True:
        notice = listener.receive(60)
        assert notice is not None, f"no further STATUS; got {[n.fields for n in listener.notices]}"
        if "STATUS" in notice.fields:
            return notice
