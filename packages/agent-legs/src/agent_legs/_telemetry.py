"""The one place that emits Agent Legs telemetry: the ``execute_tool`` span and the action log.

Every ``run``/``arun`` call produces exactly one span (OpenTelemetry GenAI conventions plus
``agent_legs.*`` attributes) and exactly one JSON line in ``<state_dir>/actions.jsonl``. The
action log is written directly (not through a span processor), so it stays complete whatever
the tracer provider or collector does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._secrets import Redactor
from ._settings import TelemetrySettings
from ._version import __version__

__all__ = ["ActionLog", "CallRecord", "Telemetry"]

log = logging.getLogger("agent_legs")

# Keys of the arguments that best say what an action touched (the log's "target" column).
_TARGET_KEYS = ("url", "path", "source", "to", "id", "selector", "text", "language")


@dataclass(slots=True)
class CallRecord:
    """Everything known about one call when it ends."""

    action: str
    tool_name: str
    session: str
    call_id: str | None
    decision: str
    outcome: str
    duration_ms: float
    arguments: Any = None
    result: Any = None
    error_message: str | None = None
    rule: str | None = None


def _truncate(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[:limit] + f"...[{len(s) - limit} more chars]"


def _target(arguments: Any) -> str | None:
    if not isinstance(arguments, dict):
        return None
    for key in _TARGET_KEYS:
        value = arguments.get(key)
        if value:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            return _truncate(text.replace("\n", " "), 200)
    return None


class ActionLog:
    """Append-only JSON lines, flushed per action; rotated by size without losing lines."""

    def __init__(self, path: Path, max_bytes: int = 50_000_000, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the Legs' life

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file.closed:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._file.write(line)
            self._file.flush()  # a crash of this process loses no line
            if self._file.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Telemetry:
    def __init__(
        self,
        settings: TelemetrySettings,
        state_dir: Path,
        redactor: Redactor,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.redactor = redactor
        self._own_provider: TracerProvider | None = None
        if tracer_provider is None:
            tracer_provider = self._own_provider = _default_provider(settings)
        self.tracer = tracer_provider.get_tracer("agent_legs", __version__)
        self.action_log = ActionLog(state_dir / "actions.jsonl")

    # -- spans -------------------------------------------------------------------------------
    def start(
        self, tool_name: str, action: str, session: str, call_id: str | None, parent: otel_context.Context | None
    ) -> Span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_name,
            "gen_ai.tool.type": "function",
            "agent_legs.action": action,
            "agent_legs.session": session,
        }
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        return self.tracer.start_span(
            f"{self.settings.span_name_prefix} {tool_name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )

    def finish(self, span: Span, rec: CallRecord) -> None:
        """Close the call's span and write its action-log line (both redacted)."""
        redact = self.redactor
        capture = self.settings.capture_content
        limit = self.settings.max_attribute_chars
        error_message = redact.text(rec.error_message) if rec.error_message else None
        arguments = redact.data(rec.arguments) if capture else None

        attributes: dict[str, Any] = {"agent_legs.decision": rec.decision, "agent_legs.outcome": rec.outcome}
        if rec.rule:
            attributes["agent_legs.rule"] = rec.rule
        if capture:
            attributes["gen_ai.tool.call.arguments"] = _truncate(_dumps(arguments), limit)
            if rec.result is not None:
                attributes["gen_ai.tool.call.result"] = _truncate(redact.text(_dumps(rec.result)), limit)
        if rec.outcome != "ok":
            attributes["error.type"] = rec.outcome
            span.set_status(Status(StatusCode.ERROR, error_message or rec.outcome))
        span.set_attributes(attributes)
        span.end()

        ctx = span.get_span_context()
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "trace_id": f"{ctx.trace_id:032x}" if ctx.is_valid else None,
            "span_id": f"{ctx.span_id:016x}" if ctx.is_valid else None,
            "action": rec.action,
            "session": rec.session,
            "call_id": rec.call_id,
            "decision": rec.decision,
            "outcome": rec.outcome,
            "duration_ms": round(rec.duration_ms, 3),
            "error": error_message,
            "rule": rec.rule,
            "target": redact.text(t) if (t := _target(rec.arguments)) else None,
        }
        if capture:
            entry["arguments"] = arguments
        self.action_log.write(entry)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self.action_log.close()
        if self._own_provider is not None:
            deadline = time.monotonic() + timeout_s
            self._own_provider.force_flush(int(timeout_s * 1000))
            # shutdown() of the batch processor can wait on a dead collector: run it bounded.
            t = threading.Thread(target=self._own_provider.shutdown, daemon=True, name="agent-legs-otel-shutdown")
            t.start()
            t.join(max(0.0, deadline - time.monotonic()))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


class _WarnOnceExporter(SpanExporter):
    """Delegates to the OTLP exporter; a dead or slow collector produces one warning, not one per batch
    (the action log stays complete either way)."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the batch thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE and not self.warned:
            self.warned = True
            log.warning("exporting spans to %s failed; later failures are not reported again. The local action "
                        "log (agent-legs log) is complete.", self.endpoint)
            logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").setLevel(logging.CRITICAL)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _default_provider(settings: TelemetrySettings) -> TracerProvider:
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": settings.service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    endpoint = settings.otlp_endpoint
    env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint or env:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces") if endpoint else OTLPSpanExporter()
        target = endpoint or env or "?"
        provider.add_span_processor(BatchSpanProcessor(_WarnOnceExporter(exporter, target)))
    return provider
