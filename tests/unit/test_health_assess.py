"""The health verdict as a pure function: what makes the gateway answer 503."""

from __future__ import annotations

from gateway.health import assess
from gateway.schemas.system import ProjectionHealth, ServiceHealth, StoreHealth, StreamHealth

STREAMS = [StreamHealth(name="EVENTS", ok=True, messages=10, last_seq=10)]
STORE = StoreHealth(ok=True, dialect="sqlite")
UP = [ServiceHealth(name="projector", required=True, up=True, instances=1, versions=["1"])]


def projection(lag: int = 0, behind_s: float | None = None) -> ProjectionHealth:
    return ProjectionHealth(name="jobs", checkpoint=10 - lag, lag=lag, behind_s=behind_s, updated_at=None)


def verdict(projections, services=UP, connected=True, streams=STREAMS, store=STORE) -> tuple[str, list[str]]:
    return assess(connected=connected, streams=streams, store=store, services=services, projections=projections,
                  max_lag=100, max_behind_s=30.0)


def test_fine_within_the_thresholds() -> None:
    assert verdict([projection(lag=100, behind_s=30.0)]) == ("ok", [])


def test_too_many_events_or_too_long_behind_is_degraded() -> None:
    status, problems = verdict([projection(lag=101, behind_s=1.0)])
    assert status == "degraded" and problems == ["read model jobs is 101 events behind (more than 100)"]
    status, problems = verdict([projection(lag=1, behind_s=31.0)])
    assert status == "degraded" and "has not applied event 10 for 31s" in problems[0]


def test_a_silent_required_service_is_degraded_and_no_nats_is_down() -> None:
    silent = [ServiceHealth(name="projector", required=True, up=False, instances=0, versions=[])]
    assert verdict([projection()], services=silent) == ("degraded", ["projector is not answering"])
    optional = [ServiceHealth(name="trainer", required=False, up=False, instances=0, versions=[])]
    assert verdict([projection()], services=optional) == ("ok", [])
    assert verdict([], connected=False)[0] == "down"
    broken = [StreamHealth(name="EVENTS", ok=False, messages=0, last_seq=0, error="gone")]
    assert verdict([], streams=broken)[0] == "down"
