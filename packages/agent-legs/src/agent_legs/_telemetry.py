"""The one place that emits Agent Legs telemetry: the ``execute_tool`` span and the action log.

Every ``run``/``arun`` call produces exactly one span (OpenTelemetry GenAI conventions plus
``agent_legs.*`` attributes) and exactly one JSON line in ``<state_dir>/actions.jsonl``. The
action log is written directly (not through a span processor), so it stays complete whatever
the tracer provider or collector does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._secrets import Redactor
from ._settings import TelemetrySettings
from ._version import __version__

__all__ = ["ActionLog", "CallRecord", "Telemetry", "application_provider", "follow_log", "log_files", "read_log"]

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
    approval: dict[str, Any] | None = None  # {"decision", "by", "rule"} when the call went through approval


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
    """Append-only JSON lines, flushed per action; rotated by size without losing lines.

    Each line goes out in one ``write(2)`` on an ``O_APPEND`` descriptor, so several processes
    sharing a state dir (an agent and ``agent-legs run``) never interleave half lines. When another
    process has rotated the file, the next write reopens the new one instead of feeding the backup.
    """

    def __init__(self, path: Path, max_bytes: int = 50_000_000, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino = 0
        self._open()

    def _open(self) -> None:
        # 0o600: the log holds (redacted) arguments of every call; it is nobody else's business.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._ino = os.fstat(self._fd).st_ino

    def write(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode(
            "utf-8", "backslashreplace")  # a lone surrogate must not cost the line
        with self._lock:
            if self._fd is None:
                self._open()
            else:
                try:
                    if os.stat(self.path).st_ino != self._ino:  # rotated (or removed) by someone else
                        os.close(self._fd)
                        self._open()
                except FileNotFoundError:
                    os.close(self._fd)
                    self._open()
            assert self._fd is not None
            view = memoryview(data)
            while view:  # one call in practice; a regular file only writes short on a full disk
                view = view[os.write(self._fd, view):]
            if os.fstat(self._fd).st_size >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        assert self._fd is not None
        # Processes sharing the log rotate one at a time (two shifting .1 -> .2 -> ... at once would
        # overwrite each other's backups); the one that comes second finds the work done.
        with _rotation_lock(self.path):
            if _ino(self.path) == self._ino and os.fstat(self._fd).st_size >= self.max_bytes:
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                if self.backups > 0:
                    os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
                else:
                    self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
            self._open()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@contextlib.contextmanager
def _rotation_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Writers rotate under the exclusive lock; readers list and open the files under the shared one,
    so they never see names half-way through a shift."""
    try:
        import fcntl
    except ImportError:  # Windows: one process per state dir is assumed there
        yield
        return
    try:
        lock = open(path.with_name(f".{path.name}.lock"), "a")  # noqa: SIM115 - closed below
    except OSError:
        if not shared:
            raise
        yield  # a reader without write access to the state dir: the inode checks still apply
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def log_files(path: Path) -> list[Path]:
    """The action log and its rotated backups, oldest first (``actions.jsonl.N`` ... ``.1``, then the file)."""
    backups: list[tuple[int, Path]] = []
    for p in path.parent.glob(f"{path.name}.*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            backups.append((int(suffix), p))
    files = [p for _, p in sorted(backups, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def _parse(line: str | bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None  # a torn line (a crash mid-write on a full disk): skip it, keep the rest
    return entry if isinstance(entry, dict) else None


def _open_log_files(path: Path) -> list[tuple[int, BinaryIO]]:
    """The log's files, oldest first, opened as one consistent set: names shift on each rotation, so
    a set in which a name no longer held the file it held when listed is reopened."""
    for _attempt in range(50):
        with _rotation_lock(path, shared=True):
            files = log_files(path)
            listed = [_ino(p) for p in files]
            handles: list[tuple[int, BinaryIO]] = []
            consistent = True
            for p, ino in zip(files, listed, strict=True):
                try:
                    h: BinaryIO = open(p, "rb")  # noqa: SIM115 - handed to the caller
                except FileNotFoundError:
                    consistent = False
                    break
                handles.append((os.fstat(h.fileno()).st_ino, h))
                if handles[-1][0] != ino:
                    consistent = False
                    break
        if consistent:
            return handles
        for _, stale in handles:
            stale.close()
        time.sleep(0.01)
    raise OSError(f"{path} keeps rotating while being read")


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """Every entry of the action log, oldest first, across the rotated backups."""
    handles = _open_log_files(path)
    try:
        for _, h in handles:
            yield from _entries(h)
    finally:
        for _, h in handles:
            h.close()


def _ino(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None


def _entries(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip() and (entry := _parse(line)) is not None:
            yield entry


def follow_log(
    path: Path, poll_s: float = 0.2, stop: threading.Event | None = None
) -> Iterator[dict[str, Any] | None]:
    """The whole log (as ``read_log``), one ``None`` where what was already written ends, then every
    new entry as it is written, like ``tail -F``.

    Survives rotation without losing or repeating lines: the open file is read to its end before
    moving on, and every file rotated since (several, if the writer was quick) is read before the
    new current one. Files are told apart by inode, not name, since names shift on each rotation.
    """
    while not path.exists():
        if stop is not None and stop.is_set():
            return
        time.sleep(poll_s)
    f: BinaryIO = open(path, "rb")  # noqa: SIM115 - swapped on rotation below
    try:
        ino = os.fstat(f.fileno()).st_ino
        files = _open_log_files(path)
        inos = [i for i, _ in files]
        older = files[: inos.index(ino)] if ino in inos else files
        for _, h in files:
            if all(h is not o for _, o in older):
                h.close()
        for _, h in older:  # the history before the file we hold
            with h:
                yield from _entries(h)
        pending = b""
        live = False
        while stop is None or not stop.is_set():
            chunk = f.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    yield from _entries([pending])
                    pending = b""
                continue
            current = _ino(path)
            if not live:
                live = True
                yield None
            if current is None or current == ino:
                time.sleep(poll_s)  # nothing new (or mid-rotation: the new file appears in a moment)
                continue
            # Rotated: finish the file we hold, then whatever was rotated after it, then the new one.
            yield from _entries((pending + f.read()).splitlines())
            pending = b""
            files = _open_log_files(path)
            inos = [i for i, _ in files]
            newer = files[inos.index(ino) + 1:] if ino in inos else files
            for _, h in files:
                if all(h is not n for _, n in newer):
                    h.close()
            if not newer:  # the new file is not there yet
                time.sleep(poll_s)
                continue
            f.close()
            *between, (ino, f) = newer
            for _, h in between:
                with h:
                    yield from _entries(h)
    finally:
        f.close()


def application_provider() -> trace.TracerProvider | None:
    """The provider the application installed with ``trace.set_tracer_provider`` (an SDK provider,
    Phoenix's, Logfire's, ...), or ``None`` while only the API's default proxy / a no-op is there."""
    provider = trace.get_tracer_provider()
    # Exactly the API's proxy (a library's own proxy class, e.g. Logfire's, is a real provider).
    if type(provider) is trace.ProxyTracerProvider or isinstance(provider, trace.NoOpTracerProvider):
        return None
    return provider


class _Tracer(trace.Tracer):
    """Our tracer, choosing its provider per span: the one passed to ``Legs``, else the application's
    global provider, else our own.

    The choice is made per span (one global read), not once: an application that installs its provider
    after building ``Legs`` (Phoenix ``register()`` after an import-time ``Legs()``) gets every later span.
    """

    def __init__(self, fixed: trace.TracerProvider | None, own: trace.TracerProvider | None) -> None:
        self._fixed = fixed.get_tracer("agent_legs", __version__) if fixed is not None else None
        self._own = own.get_tracer("agent_legs", __version__) if own is not None else None
        self._app: tuple[trace.TracerProvider, trace.Tracer] | None = None

    def current(self) -> trace.Tracer:
        if self._fixed is not None:
            return self._fixed
        app = application_provider()
        if app is not None:
            cached = self._app
            if cached is None or cached[0] is not app:
                cached = self._app = (app, app.get_tracer("agent_legs", __version__))
            return cached[1]
        if self._own is None:  # only when an application provider was there at start, and is gone
            return trace.NoOpTracer()
        return self._own

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        return self.current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.current().start_as_current_span(*args, **kwargs)


class Telemetry:
    """Where spans go (``provider``: ``"explicit"``, ``"application"`` or ``"internal"``) and the action log.

    Spans go to the provider passed to ``Legs``; else to the application's global provider when it has
    set one; else to our own (OTLP when the standard variables say where; otherwise it records nothing).
    The action log is written in every case, with the call's trace and span ids: those ids are real
    (a span nobody records still has them, and the caller's trace id when nested), and always name the
    call's line in the action log (``agent-legs log --trace ID``).
    """

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
        self._exporter: _GuardedExporter | None = None
        if tracer_provider is not None:
            self.tracer = _Tracer(tracer_provider, None)
        elif application_provider() is not None:
            self.tracer = _Tracer(None, None)
        else:
            self._own_provider, self._exporter = _default_provider(settings)
            self.tracer = _Tracer(None, self._own_provider)
        self._explicit = tracer_provider is not None
        self.action_log = ActionLog(state_dir / "actions.jsonl")

    @property
    def provider(self) -> str:
        """Where the next span goes: ``explicit`` (passed to Legs), ``application`` (the global one) or ``internal``."""
        if self._explicit:
            return "explicit"
        return "application" if application_provider() is not None else "internal"

    # -- spans -------------------------------------------------------------------------------
    def start(
        self, tool_name: str, action: str, session: str, call_id: str | None, parent: otel_context.Context | None,
        description: str | None = None,
    ) -> Span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_name,
            "gen_ai.tool.type": "function",
            "agent_legs.action": action,
            "agent_legs.session": session,
        }
        if description:
            attributes["gen_ai.tool.description"] = _truncate(description, self.settings.max_attribute_chars)
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
        redacted_arguments = redact.data(rec.arguments)  # scrubbed whole, before any cut below
        arguments = redacted_arguments if capture else None

        if span.is_recording():  # not when sampled out: the attributes would be dropped unread
            attributes: dict[str, Any] = {"agent_legs.decision": rec.decision, "agent_legs.outcome": rec.outcome}
            if rec.rule:
                attributes["agent_legs.rule"] = rec.rule
            if rec.approval:
                attributes["agent_legs.approval.decision"] = rec.approval["decision"]
                if rec.approval.get("by"):
                    attributes["agent_legs.approval.by"] = redact.text(str(rec.approval["by"]))
            if capture:
                attributes["gen_ai.tool.call.arguments"] = _truncate(_dumps(arguments), limit)
                if rec.result is not None:
                    # The text the model reads, as it reads it (a JSON string would quote and escape it).
                    result = rec.result if isinstance(rec.result, str) else _dumps(rec.result)
                    attributes["gen_ai.tool.call.result"] = _truncate(redact.text(result), limit)
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
            "target": _target(redacted_arguments),
        }
        if rec.approval:
            entry["approval"] = redact.data(rec.approval)
        if capture:
            entry["arguments"] = arguments
        try:
            self.action_log.write(entry)
        except OSError:  # a full disk or a removed state dir must not turn into a crash of the agent
            log.exception("could not write the action log line for %s (%s)", rec.action, self.action_log.path)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Close the action log; flush and stop our own provider within ``timeout_s`` whatever the collector does.

        ``BatchSpanProcessor.force_flush`` ignores its timeout (it exports on the calling thread, one
        request per batch, each with its own timeout and retries), so both steps run on a helper thread
        that we wait for with a bound; past it the exporter is told to give up and the thread is left
        to die with the process (it is a daemon).
        """
        self.action_log.close()
        provider = self._own_provider
        if provider is None:
            return
        self._own_provider = None
        exporter = self._exporter

        def flush_and_stop() -> None:
            provider.force_flush(int(timeout_s * 1000))
            provider.shutdown()

        t = threading.Thread(target=flush_and_stop, daemon=True, name="agent-legs-otel-shutdown")
        t.start()
        deadline = time.monotonic() + timeout_s
        while t.is_alive() and time.monotonic() < deadline:
            # A collector that already failed (or is failing right now: the exporter is in its retry
            # back-off) gets no more waiting: its spans would only be late, close() would be too.
            if exporter is not None and exporter.failing:
                break
            t.join(0.05)
        if t.is_alive() and exporter is not None:
            exporter.abandon()
            t.join(0.2)
            exporter.warn_once("spans not exported by close() were dropped (collector %s down or too slow).",
                               exporter.endpoint)

    # -- nesting -------------------------------------------------------------------------------
    def caller_context(self) -> otel_context.Context:
        """The OpenTelemetry context our span is parented to; call it on the caller's thread.

        Normally the caller's current context. OpenInference's LangChain instrumentor creates a span
        per tool run but never makes it current (attaching context from callbacks is unsafe), so a
        ``legs.run`` inside a LangChain tool would land beside the tool span instead of under it;
        when that instrumentor is active, its ``get_current_span()`` names the tool's span.
        """
        ctx = otel_context.get_current()
        span = _openinference_langchain_span()
        if span is None:
            return ctx
        current = trace.get_current_span(ctx)
        if current is span:
            return ctx
        if current.get_span_context().is_valid and not _started_before(current, span):
            return ctx  # the caller opened a span inside the tool run: keep it
        return trace.set_span_in_context(span, ctx)


def _openinference_langchain_span() -> Span | None:
    # Only when the user already imported (and so may have enabled) the instrumentor: never import it.
    module = sys.modules.get("openinference.instrumentation.langchain")
    if module is None:
        return None
    try:
        if not module.LangChainInstrumentor().is_instrumented_by_opentelemetry:
            return None  # get_current_span() would print a complaint to stdout
        span = module.get_current_span()
    except Exception:  # another version's API: nesting is best effort, the action is not
        log.debug("openinference get_current_span() failed", exc_info=True)
        return None
    if span is None or not span.is_recording() or not span.get_span_context().is_valid:
        return None
    return cast(Span, span)


def _started_before(a: Span, b: Span) -> bool:
    """Whether span ``a`` started before ``b`` (an ancestor of the tool span, not a span inside it)."""
    sa, sb = getattr(a, "start_time", None), getattr(b, "start_time", None)
    if isinstance(sa, int) and isinstance(sb, int):
        return sa <= sb
    return False


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


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
        exporter: _GuardedExporter | None = getattr(self.local, "exporter", None)
        if exporter is None:
            return True
        if record.levelno >= logging.WARNING:
            exporter.failing = True  # e.g. "Transient error ... retrying in 2.00s"
        return False


_QUIET = _QuietWhileExporting()
for _name in _EXPORTER_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET)


class _GuardedExporter(SpanExporter):
    """Wraps the OTLP exporter: a dead or slow collector yields one warning (and an info line when it
    is back), never an exception in the batch thread, never a log line per batch or retry."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.warned = False
        self.failing = False  # the last attempt failed (set as soon as a retry starts)
        self._abandoned = False
        self._lock = threading.Lock()

    def warn_once(self, message: str, *args: Any) -> None:
        with self._lock:
            if self.warned:
                return
            self.warned = True
        log.warning(message + " Actions are unaffected; the action log (agent-legs log) is complete.", *args)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._abandoned:
            return SpanExportResult.FAILURE
        _QUIET.local.exporter = self
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the batch thread
            result = SpanExportResult.FAILURE
        finally:
            _QUIET.local.exporter = None
        if result is SpanExportResult.FAILURE:
            self.failing = True
            self.warn_once("exporting spans to %s failed (collector down, too slow or refusing them); "
                           "later failures are not reported.", self.endpoint)
        elif self.failing:
            self.failing = False
            log.info("exporting spans to %s works again", self.endpoint)
        return result

    def abandon(self) -> None:
        """Give up: later batches fail at once, and the exporter's retry back-off is interrupted."""
        self._abandoned = True
        with contextlib.suppress(Exception):
            self.inner.shutdown()

    def shutdown(self) -> None:
        if not self._abandoned:
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
    extra: dict[str, Any] = {"agent_legs.version": __version__}
    if not env.attributes.get(SERVICE_NAME):
        extra[SERVICE_NAME] = settings.service_name
    return Resource.create(extra)


def _traces_endpoint(settings: TelemetrySettings) -> str | None:
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


def _default_provider(settings: TelemetrySettings) -> tuple[TracerProvider, _GuardedExporter | None]:
    """Our own provider (when the caller gives none): OTLP/HTTP protobuf through a batch processor.

    The batch processor queues spans in memory and exports from its own thread, so an action never
    waits for the collector; OTEL_BSP_* tune it, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS / _TIMEOUT /
    _COMPRESSION / _CERTIFICATE configure the exporter (read by the exporter itself).
    """
    endpoint = _traces_endpoint(settings)
    if endpoint is None or _exporter_disabled():
        # Nothing would ever read these spans: record none (ids and parenting stay valid for the
        # action log and results; attributes are never built), which saves ~40 us per call.
        return TracerProvider(resource=_resource(settings), sampler=ALWAYS_OFF), None
    provider = TracerProvider(resource=_resource(settings))
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; Agent Legs exports OTLP over HTTP/protobuf "
                    "(use the collector's HTTP port, 4318)", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = _GuardedExporter(OTLPSpanExporter(endpoint=endpoint), _public_url(endpoint))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter
