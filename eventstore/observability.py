"""Logs and traces, configured once per process: structlog lines carry the service and trace id.

Trace context travels as a W3C `traceparent` in NATS message headers (commands, events, dispatch,
telemetry) and, to a job's own process, in the `TRACEPARENT` environment variable. It is passed on
even by a process that records no spans, so one trace survives a service with tracing off.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "stoker"
TRACEPARENT = "traceparent"
_tracing = {"on": False}
_w3c = TraceContextTextMapPropagator()


def _add_trace_id(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event.setdefault("trace_id", format(span.trace_id, "032x"))
    return event


def configure_logging(service: str, log_format: str = "auto", level: str = "info") -> None:
    """Set up structlog: pretty on a terminal, JSON lines otherwise; every line names the service."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_id,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def configure_tracing(
    service: str, exporter: str = "off", endpoint: str = "", extra: SpanExporter | None = None,
    path: Path | str | None = None,
) -> TracerProvider | None:
    """Install a tracer provider: `console` prints spans, `otlp` sends them to `endpoint`, `file` appends
    them as JSON lines to `path`, `off` records none; `extra` (a test's in-memory exporter) gets every span."""
    if exporter == "off" and extra is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"stoker-{service}"}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(endpoint)))
    elif exporter == "file":
        if not path:
            raise ValueError("tracing=file needs a path (trace_file)")
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    if extra is not None:
        provider.add_span_processor(SimpleSpanProcessor(extra))
    trace.set_tracer_provider(provider)
    _tracing["on"] = True
    return provider


def tracing_on() -> bool:
    """Whether this process records spans (configure_tracing installed a provider)."""
    return _tracing["on"]


class JsonLinesExporter(SpanExporter):
    """Spans as one JSON object a line, appended to a file several processes may share."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the spans (one write per batch: lines of different processes never interleave)."""
        data = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to close: every export opens and closes the file."""


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a plain dict (ids in the W3C hex form)."""
    context, parent = span.get_span_context(), span.parent
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x"),
            "parent_id": format(parent.span_id, "016x") if parent is not None else None,
            "name": span.name, "kind": span.kind.name,
            "service": span.resource.attributes.get("service.name", ""),
            "start": span.start_time, "end": span.end_time, "attributes": dict(span.attributes or {})}


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError("tracing=otlp needs the otlp extra: pip install 'stoker[otlp]'") from exc
    return OTLPSpanExporter(endpoint=endpoint)


@functools.cache
def tracer() -> trace.Tracer:
    """stoker's tracer (a no-op until tracing is configured).

    Made once: OpenTelemetry's proxy tracer starts using the provider as soon as one is installed, and a
    process installs one at most once; making a tracer per span cost the workers 4 % of their CPU.
    """
    return trace.get_tracer(TRACER_NAME)


def inject_trace(headers: dict[str, str], context: otel_context.Context | None = None) -> dict[str, str]:
    """Write the W3C `traceparent` of the current span (or of `context`) into message headers."""
    # Nothing to write when no span is current and no baggage rides along: the common case with tracing
    # off, and the propagators cost more than this check (every append and command pays it).
    if trace.get_current_span(context).get_span_context().is_valid or baggage.get_all(context):
        inject(headers, context=context)
    return headers


def traceparent(context: otel_context.Context | None = None) -> str:
    """The current span's (or `context`'s) W3C `traceparent`; empty when there is none."""
    carrier: dict[str, str] = {}
    _w3c.inject(carrier, context=context)
    return carrier.get(TRACEPARENT, "")


def context_of(parent: str) -> otel_context.Context | None:
    """The context a `traceparent` names, as a remote parent; None when it is empty or malformed."""
    if not parent:
        return None
    context = _w3c.extract({TRACEPARENT: parent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_id_of(parent: str) -> str:
    """The 32 hex digits of a `traceparent`'s trace id; empty when it is empty or malformed."""
    context = context_of(parent)
    return format(trace.get_current_span(context).get_span_context().trace_id, "032x") if context else ""


class attached:  # lower case: it is used as a function, `with attached(context):`
    """Make `context` the current one inside the block (None: leave the current one); the block gets the span
    then current (what `span` is without tracing). A class, not a generator: appends and calls pay for it."""

    __slots__ = ("context", "token")

    def __init__(self, context: otel_context.Context | None) -> None:
        self.context, self.token = context, None

    def __enter__(self) -> trace.Span:
        if self.context is not None:
            self.token = otel_context.attach(self.context)
        return trace.get_current_span()

    def __exit__(self, *_exc: object) -> None:
        if self.token is not None:
            otel_context.detach(self.token)


def span(name: str, *, context: otel_context.Context | None = None, kind: trace.SpanKind = trace.SpanKind.INTERNAL,
         attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[trace.Span]:
    """`tracer().start_as_current_span`, but without tracing no span at all: only `context` is made current,
    which is what a no-op span would carry on (it costs several microseconds, on every append and call)."""
    if not _tracing["on"]:
        return attached(context)
    return tracer().start_as_current_span(name, context=context, kind=kind, attributes=attributes)


@contextmanager
def consumer_span(name: str, headers: Mapping[str, str] | None, kind: trace.SpanKind = trace.SpanKind.CONSUMER,
                  **attributes: Any) -> Iterator[trace.Span]:
    """A span for handling a message, child of the span that published it (its `traceparent`).

    A message without one starts a trace of its own. Without tracing the sender's context is still made
    current, so what this handler sends on carries it.
    """
    parent = extract(dict(headers)) if headers and TRACEPARENT in headers else otel_context.Context()
    if not _tracing["on"]:
        with attached(parent):
            yield trace.get_current_span()
        return
    with attached(parent), tracer().start_as_current_span(name, kind=kind, attributes=attributes) as span:
        yield span


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger with `bound` values on every line."""
    return structlog.get_logger(**bound)
