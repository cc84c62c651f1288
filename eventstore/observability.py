"""Logs and traces, configured once per process: structlog lines carry the service and trace id."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

TRACER_NAME = "stoker"
_tracing = {"on": False}


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
) -> TracerProvider | None:
    """Install a tracer provider: `console` prints spans, `otlp` sends them to `endpoint`, `off` none."""
    if exporter == "off" and extra is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"stoker-{service}"}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(endpoint)))
    if extra is not None:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(extra))
    trace.set_tracer_provider(provider)
    _tracing["on"] = True
    return provider


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError("tracing=otlp needs the otlp extra: pip install 'stoker[otlp]'") from exc
    return OTLPSpanExporter(endpoint=endpoint)


def tracer() -> trace.Tracer:
    """stoker's tracer (a no-op until tracing is configured)."""
    return trace.get_tracer(TRACER_NAME)


def inject_trace(headers: dict[str, str]) -> dict[str, str]:
    """Write the current span's W3C `traceparent` into message headers."""
    inject(headers)
    return headers


@contextmanager
def consumer_span(name: str, headers: Mapping[str, str] | None, **attributes: Any) -> Iterator[trace.Span]:
    """A span for handling a message, child of the span that published it (its `traceparent`)."""
    if not _tracing["on"]:
        yield trace.INVALID_SPAN
        return
    parent = extract(dict(headers or {}))
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(name, kind=trace.SpanKind.CONSUMER, attributes=attributes) as span:
            yield span
    finally:
        otel_context.detach(token)


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger with `bound` values on every line."""
    return structlog.get_logger(**bound)
