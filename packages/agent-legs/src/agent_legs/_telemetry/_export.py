"""Where spans go when nobody else says: our own provider and its guarded OTLP exporter; and
``application_provider()``, which tells whether the application installed a provider of its own.

Invariants: span export is best effort and bounded. The batch processor exports from its own thread, so
an action never waits for the collector; a dead, slow or refusing collector yields one warning (and an
info line when it is back), never an exception in the batch thread nor a log line per batch or retry;
every span lost (queue full, export failed, still queued at close) is counted (``spans_dropped``). The
endpoint is logged without its ``user:password`` part. Threat model: the collector may hang, refuse or
disappear at any time; actions and the action log must not notice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from .._settings import TelemetrySettings
from .._version import __version__
from ._semconv import AGENT_LEGS_VERSION

__all__ = ["GuardedExporter", "application_provider", "default_provider", "traces_endpoint"]

log = logging.getLogger("agent_legs")


# Read per span: the API's ``get_tracer_provider`` looks the variable up in ``os.environ`` on every call
# until a provider is installed (about 2 us); whether the environment names a provider is read once.
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _installed(api: Any) -> trace.TracerProvider | None:
    """The provider installed with ``trace.set_tracer_provider``, read from the API's global (``None``
    when none is, or when this API version keeps it elsewhere: then ``get_tracer_provider`` is asked)."""
    if not hasattr(api, "_TRACER_PROVIDER"):
        return api.get_tracer_provider()  # type: ignore[no-any-return]
    return cast("trace.TracerProvider | None", api._TRACER_PROVIDER)


_GLOBAL_SLOT = hasattr(trace, "_TRACER_PROVIDER")  # where this API version keeps the installed provider


def application_provider() -> trace.TracerProvider | None:
    """The provider the application installed with ``trace.set_tracer_provider`` (an SDK provider,
    Phoenix's, Logfire's, ...), or ``None`` while only the API's default proxy / a no-op is there."""
    provider = trace._TRACER_PROVIDER if _GLOBAL_SLOT else _installed(trace)  # read per span: one global read
    if provider is None:
        if not _PROVIDER_FROM_ENV:
            return None  # nothing installed, nothing named by the environment: the API's proxy
        provider = trace.get_tracer_provider()
    # Exactly the API's proxy (a library's own proxy class, e.g. Logfire's, is a real provider).
    if type(provider) is trace.ProxyTracerProvider or isinstance(provider, trace.NoOpTracerProvider):
        return None
    return provider


# -- OTLP export ---------------------------------------------------------------------------------

_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
)


class _QuietWhileExporting(logging.Filter):
    """Drops the exporter's own records emitted inside our export call, on that thread only, and tells
    our exporter that an attempt failed (the OTLP exporter retries silently otherwise).

    Raising the exporter loggers' level instead would also silence exporters the application runs itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        exporter: GuardedExporter | None = getattr(self.local, "exporter", None)
        if exporter is None:
            return True
        if record.levelno >= logging.WARNING:
            exporter.failing = True  # e.g. "Transient error ... retrying in 2.00s"
        return False


_QUIET = _QuietWhileExporting()
for _name in _EXPORTER_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET)


class GuardedExporter(SpanExporter):
    """Wraps the OTLP exporter: a dead or slow collector yields one warning (and an info line when it
    is back), never an exception in the batch thread, never a log line per batch or retry."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.accepted = 0  # spans handed to the batch processor (counted by _CountingBatchSpanProcessor)
        self.queue_full = 0  # of those, dropped by the processor because its queue was full
        self.exported = 0
        self.failed = 0  # spans in batches whose export failed
        self.warned = False
        self.failing = False  # the last attempt failed (set as soon as a retry starts)
        self._abandoned = False
        self._inner_shut = False
        self._lock = threading.Lock()

    def warn_once(self, message: str, *args: Any) -> None:
        with self._lock:
            if self.warned:
                return
            self.warned = True
        log.warning(message + " Actions are unaffected; the action log (agent-legs log) is complete.", *args)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._abandoned:
            with self._lock:
                self.failed += len(spans)
            return SpanExportResult.FAILURE
        _QUIET.local.exporter = self
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the batch thread
            result = SpanExportResult.FAILURE
        finally:
            _QUIET.local.exporter = None
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        if result is SpanExportResult.FAILURE:
            self.failing = True
            self.warn_once(
                "exporting spans to %s failed (collector down, too slow or refusing them); later failures are not reported.",
                self.endpoint,
            )
        elif self.failing:
            self.failing = False
            log.info("exporting spans to %s works again", self.endpoint)
        return result

    @property
    def dropped(self) -> int:
        """Spans known lost so far: queue full or export failed."""
        return self.queue_full + self.failed

    def dropped_at_close(self) -> int:
        """After the provider is stopped (or given up): every accepted span that was not exported."""
        return max(self.accepted - self.exported, self.dropped)

    def abandon(self) -> None:
        """Give up: later batches fail at once, and the exporter's retry back-off is interrupted."""
        self._abandoned = True
        with contextlib.suppress(Exception):
            self._shut_inner()

    def shutdown(self) -> None:
        self._shut_inner()

    def _shut_inner(self) -> None:
        """The wrapped exporter shut down once: ``abandon`` (the closing thread) and the batch processor's
        ``shutdown`` may both get here, and a second call logs "already shutdown" on the application's log."""
        with self._lock:
            if self._inner_shut:
                return
            self._inner_shut = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _public_url(url: str) -> str:
    """The endpoint for a log message: without any user:password part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _resource(settings: TelemetrySettings) -> Resource:
    # OTEL_SERVICE_NAME and a service.name in OTEL_RESOURCE_ATTRIBUTES (both read by Resource.create)
    # win over the settings, as deployments set them; otherwise settings.telemetry.service_name.
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector

    env = OTELResourceDetector().detect()
    extra: dict[str, Any] = {AGENT_LEGS_VERSION: __version__}
    if not env.attributes.get(SERVICE_NAME):
        extra[SERVICE_NAME] = settings.service_name
    return Resource.create(extra)


def traces_endpoint(settings: TelemetrySettings) -> str | None:
    """Where spans go, most specific first: the settings, the per-signal variable, the base variable."""
    if settings.otlp_endpoint:
        base = settings.otlp_endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"
    if url := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return url  # used as is, per the specification
    if url := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return url.rstrip("/") + "/v1/traces"
    return None


def _exporter_disabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return True
    exporters = {x.strip() for x in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")}
    return "otlp" not in exporters


def default_provider(settings: TelemetrySettings) -> tuple[TracerProvider, GuardedExporter | None]:
    """Our own provider (when the caller gives none): OTLP/HTTP protobuf through a batch processor.

    The batch processor queues spans in memory and exports from its own thread, so an action never
    waits for the collector; OTEL_BSP_* tune it, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS / _TIMEOUT /
    _COMPRESSION / _CERTIFICATE configure the exporter (read by the exporter itself).
    """
    endpoint = traces_endpoint(settings)
    if endpoint is None or _exporter_disabled():
        # Nothing would ever read these spans: record none (ids and parenting stay valid for the
        # action log and results; attributes are never built), which saves ~40 us per call.
        return TracerProvider(resource=_resource(settings), sampler=ALWAYS_OFF), None
    # shutdown_on_exit=False: the SDK's atexit hook would wait on a stuck export at interpreter exit
    # (about 5 s more with a hung collector); close() (also run at exit for a Legs left open) is bounded.
    provider = TracerProvider(resource=_resource(settings), shutdown_on_exit=False)
    protocol = (
        (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        .strip()
        .lower()
    )
    if protocol != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; Agent Legs exports OTLP over HTTP/protobuf "
            "(use the collector's HTTP port, 4318)",
            protocol,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = GuardedExporter(OTLPSpanExporter(endpoint=endpoint), _public_url(endpoint))
    provider.add_span_processor(_CountingBatchSpanProcessor(exporter))
    return provider, exporter


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it takes and those it drops because its queue is full
    (the SDK only logs "Queue full" per span, with no count anywhere)."""

    def __init__(self, exporter: GuardedExporter) -> None:
        super().__init__(exporter)
        self._counts = exporter
        self._count_lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        inner = getattr(self, "_batch_processor", None)
        queue = getattr(inner, "_queue", None)
        full = queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen
        with self._count_lock:
            self._counts.accepted += 1
            if full:
                self._counts.queue_full += 1
        _QUEUE_FULL.local.inside = True  # the SDK's "Queue full" line per span: counted here instead
        try:
            super().on_end(span)
        finally:
            _QUEUE_FULL.local.inside = False


class _QuietQueueFull(logging.Filter):
    """Drops the SDK's per-span "Queue full" record, only when emitted inside our processor on this thread
    (an application's own processors keep theirs); our count is reported at close instead."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "inside", False)


_QUEUE_FULL = _QuietQueueFull()
logging.getLogger("opentelemetry.sdk._shared_internal").addFilter(_QUEUE_FULL)
