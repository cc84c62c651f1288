"""What an append writes into each event's headers: ids, type, schema, correlation, and whose trace it carries."""

from __future__ import annotations

from contracts import events as ev
from contracts.base import utcnow
from contracts.subjects import Topology
from eventstore.logcore import prepare_messages
from eventstore.observability import attached, context_of, span, trace_id_of, traceparent, tracer
from eventstore.records import CORRELATION, MSG_ID, TYPE, PendingAppend

TOPOLOGY = Topology("theaders")
FIRST = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECOND = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def appends() -> list[PendingAppend]:
    """Two commands' decisions in one batch, each with the trace its command came with."""
    now = utcnow()
    return [PendingAppend("job", "J1", [ev.JobAssigned(job_id="J1", attempt=1, worker_id="w1", assigned_at=now),
                                        ev.JobStarted(job_id="J1", attempt=1, worker_id="w1", started_at=now)],
                          1, context_of(FIRST)),
            PendingAppend("job", "J2", [ev.JobStopped(job_id="J2", attempt=1, stopped_at=now)], None,
                          context_of(SECOND))]


def test_without_an_append_span_each_command_s_events_carry_its_own_trace() -> None:
    with attached(context_of(FIRST)):  # what `span` does without tracing: the first command's context, current
        messages = prepare_messages(TOPOLOGY, appends(), None, None, None)
    assert [m[2]["traceparent"] for m in messages] == [FIRST, FIRST, SECOND]
    assert [m[2][TYPE] for m in messages] == ["JobAssigned", "JobStarted", "JobStopped"]
    assert len({m[2][MSG_ID] for m in messages}) == 3
    assert {m[2][CORRELATION] for m in messages} == {messages[0][2][MSG_ID]}
    assert "Nats-Expected-Last-Subject-Sequence" in messages[0][2] and len(
        [m for m in messages if "Nats-Expected-Last-Subject-Sequence" in m[2]]) == 1


def test_in_an_append_span_the_first_command_s_events_carry_the_span() -> None:
    # The span is the first command's trace's (a child when tracing records, the same span when it does not).
    with tracer().start_as_current_span("stoker.append", context=context_of(FIRST)):
        messages = prepare_messages(TOPOLOGY, appends(), None, None, None)
    assert [trace_id_of(m[2]["traceparent"]) for m in messages] == [trace_id_of(p) for p in (FIRST, FIRST, SECOND)]


def test_a_span_carries_its_context_on_whether_or_not_this_process_traces() -> None:
    # A service without tracing between two that trace keeps the trace whole: what it sends continues it.
    with span("stoker.dispatch assign", context=context_of(FIRST)):
        assert trace_id_of(traceparent()) == trace_id_of(FIRST)
    with span("stoker.call x"):
        assert traceparent() == ""  # no context, none invented


def test_an_event_decided_outside_any_trace_carries_no_traceparent_and_baggage_still_rides_along() -> None:
    from opentelemetry import baggage

    from eventstore.observability import inject_trace

    now = utcnow()
    plain = [PendingAppend("job", "J3", [ev.JobStopped(job_id="J3", attempt=1, stopped_at=now)], None, None)]
    (message,) = prepare_messages(TOPOLOGY, plain, None, None, None)
    assert "traceparent" not in message[2]
    with span("stoker.append"):
        assert inject_trace({}) == {}
    assert inject_trace({}, baggage.set_baggage("tenant", "lab")) == {"baggage": "tenant=lab"}
