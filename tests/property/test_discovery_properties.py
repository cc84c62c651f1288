"""Random histories of registrations, heartbeats, silence and takeovers against discovery's decider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.commands import DeregisterWorker, RegisterWorker
from contracts.errors import DomainError
from services.discovery import domain

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = domain.Timing(lost_after_s=10, forget_after_s=60)
CAPS = ev.WorkerCapabilities(hostname="h", cpu_cores=1, ram_mb=1)
ALLOWED = {  # status before -> events that may follow
    None: {"WorkerRegistered"},
    "healthy": {"WorkerRegistered", "WorkerLost", "WorkerDeregistered"},
    "lost": {"WorkerRegistered", "WorkerReturned", "WorkerDeregistered", "WorkerForgotten"},
    "left": {"WorkerRegistered", "WorkerForgotten"},
}
AFTER = {"WorkerRegistered": "healthy", "WorkerLost": "lost", "WorkerReturned": "healthy",
         "WorkerDeregistered": "left", "WorkerForgotten": None}


class Acting:
    """The handler's bookkeeping without I/O; `heard` is the test's own record of when each worker spoke."""

    def __init__(self) -> None:
        self.state, self.seen, self.log, self.now = domain.initial_state(), {}, [], T0
        self.heard: dict[str, datetime] = {}
        self.status: dict[str, str | None] = {}
        self.since: dict[str, datetime] = {}

    def apply(self, events: list[ev.Event]) -> None:
        for event in events:
            name, worker_id = type(event).__name__, event.worker_id
            assert name in ALLOWED[self.status.get(worker_id)], f"{name} after {self.status.get(worker_id)}"
            if name == "WorkerLost":
                assert self.now - self.heard[worker_id] >= timedelta(seconds=TIMING.lost_after_s)
            if name == "WorkerForgotten":
                assert self.now - self.since[worker_id] >= timedelta(seconds=TIMING.forget_after_s)
            self.status[worker_id], self.since[worker_id] = AFTER[name], self.now
            self.state = domain.evolve(self.state, event)
            self.log.append(event)

    def step(self, kind: str, worker_id: str, seconds: float) -> None:
        if kind == "register":
            self.apply(domain.decide(RegisterWorker(worker_id=worker_id, capabilities=CAPS), self.state, self.now))
            self.seen[worker_id] = self.heard[worker_id] = self.now
        elif kind == "deregister":
            try:
                self.apply(domain.decide(DeregisterWorker(worker_id=worker_id), self.state, self.now))
            except DomainError:
                assert worker_id not in self.state.workers
        elif kind == "heartbeat" and worker_id in self.state.workers:
            self.seen[worker_id] = self.heard[worker_id] = self.now
            self.apply(domain.decide_heartbeat(self.state, worker_id, self.now))
        elif kind == "wait":
            self.now += timedelta(seconds=seconds)
        elif kind == "takeover":  # a new discovery: the registry from the log, no heartbeat times
            self.state = fold(self.log)
            self.seen = {}
            self.heard = {w: self.now for w in self.heard}
        self.seen = domain.seed_seen(self.state, self.seen, self.now)
        self.apply(domain.decide_tick(self.state, self.seen, self.now, TIMING))


def fold(log: list[ev.Event]) -> domain.Registry:
    state = domain.initial_state()
    for event in log:
        state = domain.evolve(state, event)
    return state


steps = st.tuples(st.sampled_from(["register", "deregister", "heartbeat", "wait", "takeover"]),
                  st.sampled_from(["w1", "w2", "w3"]), st.sampled_from([1.0, 4.0, 9.0, 30.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, max_size=50))
def test_registry_invariants_and_replay(history: list[tuple[str, str, float]]) -> None:
    acting = Acting()
    for step in history:
        acting.step(*step)
        assert fold(acting.log) == acting.state, "folding the log does not give the live registry"
        for worker_id, record in acting.state.workers.items():
            assert record.status == acting.status[worker_id]
            if record.status == "healthy":  # nobody silent for lost_after_s is still called healthy
                assert acting.now - acting.heard[worker_id] < timedelta(seconds=TIMING.lost_after_s)
        assert set(acting.state.workers) == {w for w, s in acting.status.items() if s is not None}
