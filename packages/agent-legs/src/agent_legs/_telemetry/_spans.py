"""The ``execute_tool`` span of a call: which tracer makes it, what it is parented to, what it carries.

* ``Tracer`` picks its provider per span: the one passed to ``Legs``, else the application's global
  provider, else our own (an application that installs its provider after ``Legs()`` gets every later span).
* ``caller_context()`` is the caller's current OpenTelemetry context, unless a **parent hook** names a
  better parent. The core knows no agent framework: a framework whose instrumentation opens a span per
  tool run without making it current (OpenInference's LangChain instrumentor) is handled by its adapter
  package, which declares a hook in the ``agent_legs_parent_spans`` entry-point group, named after the
  module that must already be imported for the hook to apply (so a hook is loaded only when its
  framework is in use, and the core never imports a framework); importing the adapter registers it too
  (``register_parent_hook``). A hook returns the span of the framework's current run, or ``None``; a span
  the caller opened itself inside that run (started later than the hook's span) stays the parent.
* ``start_span``/``end_span`` set the attributes (``_semconv``: OpenTelemetry GenAI plus ``agent_legs.*``),
  redacted and truncated to ``max_attribute_chars``: the ones known at creation in the SDK's
  ``start_span`` (samplers see them), the outcome's in one ``set_attributes``. The arguments' JSON is
  written by orjson where it is installed (compact; a sixth of the stdlib encoder's ~6 us per call),
  the stdlib's for what orjson refuses; the shown result is computed once for the span and the log.

Threat model: a hook is third-party code of any version: whatever it raises or returns, the action runs
(nesting is best effort) and the failure is logged at debug level once per hook.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from .._secrets import Redactor
from .._settings import TelemetrySettings
from .._version import __version__
from . import _semconv as sc
from ._export import application_provider
from ._log_writer import json_text
from ._records import CallRecord, dumps, truncate

__all__ = [
    "PARENT_HOOKS_GROUP",
    "ParentHook",
    "Tracer",
    "caller_context",
    "discover_parent_hooks",
    "end_span",
    "register_parent_hook",
    "shown_result",
    "start_span",
]

log = logging.getLogger("agent_legs")

PARENT_HOOKS_GROUP = "agent_legs_parent_spans"
_RANDOM_TRACE_ID: int = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # the W3C level-2 flag, where the API has it
ParentHook = Callable[[], Span | None]

_FLAGS = {f: TraceFlags(f) for f in (0, _RANDOM_TRACE_ID)}
_MAX_TRACE_ID, _MAX_SPAN_ID = 2**128 - 1, 2**64 - 1
_tuple_new = tuple.__new__


def _made_directly(trace_id: int, span_id: int, flags: int, state: TraceState | None) -> SpanContext:
    return _tuple_new(  # type: ignore[no-any-return]
        SpanContext,
        (
            trace_id,
            span_id,
            False,
            _FLAGS.get(flags) or TraceFlags(flags),
            DEFAULT_TRACE_STATE if state is None else state,
            0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID,
        ),
    )


def _made_by_the_api(trace_id: int, span_id: int, flags: int, state: TraceState | None) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=state)


def _same_layout() -> bool:
    """Whether this API version's ``SpanContext`` is the tuple ``_made_directly`` builds (checked once)."""
    try:
        for args in ((1, 2, _RANDOM_TRACE_ID, None), (2**128 - 1, 7, 0, TraceState([("k", "v")])), (0, 1, 0, None)):
            made, ref = _made_directly(*args), _made_by_the_api(*args)
            if tuple(made) != tuple(ref) or made != ref or made.is_valid != ref.is_valid:
                return False
    except Exception:  # any surprise: the API's constructor is used
        return False
    return True


# ``SpanContext(...)`` runs a Python ``__new__`` (defaults, the validity check) and a ``TraceFlags``
# per span: about 1.5 us; the same tuple made directly costs a fifth of that.
_span_context = _made_directly if _same_layout() else _made_by_the_api


class Tracer(trace.Tracer):
    """Our tracer, choosing its provider per span: the one passed to ``Legs``, else the application's
    global provider, else our own.

    The choice is made per span (one global read), not once: an application that installs its provider
    after building ``Legs`` (Phoenix ``register()`` after an import-time ``Legs()``) gets every later span.
    """

    def __init__(self, fixed: trace.TracerProvider | None, own: trace.TracerProvider | None) -> None:
        self._fixed = fixed.get_tracer("agent_legs", __version__) if fixed is not None else None
        self._own = own.get_tracer("agent_legs", __version__) if own is not None else None
        self._app: tuple[trace.TracerProvider, trace.Tracer] | None = None
        # Our own provider records nothing (no exporter configured): its spans only carry ids.
        ids = getattr(own, "id_generator", None)
        self._silent_ids = ids if own is not None and getattr(own, "sampler", None) is ALWAYS_OFF and ids is not None else None

    def records_nothing(self) -> bool:
        """Whether a span made now would go to our own provider that records nothing (no exporter, no
        provider passed to ``Legs``, none installed by the application): nobody can read it, nor its ids."""
        return self._silent_ids is not None and self._fixed is None and application_provider() is None

    def silent_span(self, parent: otel_context.Context | None) -> Span | None:
        """The span our own provider would make when it records nothing and is the one in use, else ``None``.

        Made here as the SDK makes a span its sampler drops (the parent's trace id and trace state, or a
        new trace; a new span id from the provider's id generator; the sampled flag off), without the
        sampler call and the attributes nobody could read."""
        ids = self._silent_ids
        if ids is None or self._fixed is not None or application_provider() is not None:
            return None
        parent_ctx = trace.get_current_span(parent).get_span_context()
        if parent_ctx.is_valid:
            trace_id, state, flags = parent_ctx.trace_id, parent_ctx.trace_state, parent_ctx.trace_flags & _RANDOM_TRACE_ID
        else:
            trace_id, state = ids.generate_trace_id(), None
            flags = _RANDOM_TRACE_ID if ids.is_trace_id_random() else 0
        return NonRecordingSpan(_span_context(trace_id, ids.generate_span_id(), flags, state))

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

    def start_span(self, name: str, context: otel_context.Context | None = None, *args: Any, **kwargs: Any) -> Span:
        """A span of the provider in use; when that is our own provider that records nothing, its ids
        made directly (``silent_span``: a handler's child span, e.g. ``http.request``'s, costs no sampler)."""
        if self._silent_ids is not None and (silent := self.silent_span(context)) is not None:
            return silent
        return self.current().start_span(name, context, *args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.current().start_as_current_span(*args, **kwargs)


# -- parenting -------------------------------------------------------------------------------------

_hooks_lock = threading.Lock()
# Copy-on-write tuples: caller_context() reads them without the lock, on every call.
_hooks: tuple[tuple[str, ParentHook], ...] = ()  # (trigger module, hook)
_pending: tuple[tuple[str, Any], ...] = ()  # (trigger module, entry point) declared, not loaded yet
_failed: set[str] = set()  # hooks whose failure was logged
_discovered = False


def register_parent_hook(trigger: str, hook: ParentHook) -> None:
    """Consult ``hook`` for a call's parent span whenever the module ``trigger`` has been imported."""
    global _hooks
    with _hooks_lock:
        if (trigger, hook) not in _hooks:
            _hooks = (*_hooks, (trigger, hook))


def discover_parent_hooks() -> None:
    """Note the hooks the installed packages declare (once per process; each is loaded when triggered).

    Reading the entry points scans every installed distribution (tens of ms): ``Telemetry`` does it when
    built, so that no call pays it."""
    global _discovered, _pending
    if _discovered:
        return
    from importlib.metadata import entry_points

    try:
        found = tuple((ep.name, ep) for ep in entry_points(group=PARENT_HOOKS_GROUP))
    except Exception:  # broken metadata of some distribution: nesting is best effort
        log.debug("reading the %s entry points failed", PARENT_HOOKS_GROUP, exc_info=True)
        found = ()
    with _hooks_lock:
        if not _discovered:
            _pending, _discovered = found, True


def _load_triggered() -> None:
    global _pending
    with _hooks_lock:
        ready = tuple(item for item in _pending if item[0] in sys.modules)
        _pending = tuple(item for item in _pending if item not in ready)
    for trigger, ep in ready:  # loaded outside the lock: loading imports the adapter
        try:
            register_parent_hook(trigger, ep.load())
        except Exception:
            log.debug("loading the parent hook %s failed", ep.value, exc_info=True)


def _hook_span(hook: ParentHook) -> Span | None:
    try:
        span = hook()
        if span is None or not span.is_recording() or not span.get_span_context().is_valid:
            return None
    except Exception:  # another version's API (or not a span at all): nesting is best effort, the action is not
        name = getattr(hook, "__qualname__", repr(hook))
        if name not in _failed:
            _failed.add(name)
            log.debug("the parent hook %s failed", name, exc_info=True)
        return None
    return span


def caller_context() -> otel_context.Context:
    """The OpenTelemetry context a call's span is parented to; call it on the caller's thread.

    The caller's current context, unless a parent hook of a framework in use names the span of the
    framework's current run and the caller has not opened a span of its own inside that run.
    """
    ctx = otel_context.get_current()
    if not _discovered:
        discover_parent_hooks()
    for trigger, _ in _pending:  # a plain loop: this runs on every call
        if trigger in sys.modules:
            _load_triggered()
            break
    for trigger, hook in _hooks:
        if trigger not in sys.modules:
            continue
        span = _hook_span(hook)
        if span is None:
            continue
        current = trace.get_current_span(ctx)
        if current is span:
            return ctx
        if current.get_span_context().is_valid and not _started_before(current, span):
            return ctx  # the caller opened a span inside the framework's run: keep it
        return trace.set_span_in_context(span, ctx)
    return ctx


def _started_before(a: Span, b: Span) -> bool:
    """Whether span ``a`` started before ``b`` (an ancestor of the hook's span, not a span inside it)."""
    sa, sb = getattr(a, "start_time", None), getattr(b, "start_time", None)
    if isinstance(sa, int) and isinstance(sb, int):
        return sa <= sb
    return False


# -- attributes ------------------------------------------------------------------------------------


def start_span(
    tracer: trace.Tracer,
    settings: TelemetrySettings,
    tool_name: str,
    action: str,
    session: str,
    call_id: str | None,
    parent: otel_context.Context | None,
    description: str | None = None,
) -> Span:
    """Open the call's span with the attributes known at creation (samplers see them).

    When the span goes to our own provider that records nothing, it is made without attributes
    (its sampler reads none; its ids are made the same way)."""
    if isinstance(tracer, Tracer) and (silent := tracer.silent_span(parent)) is not None:
        return silent
    attributes: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: "execute_tool",
        sc.GEN_AI_TOOL_NAME: tool_name,
        sc.GEN_AI_TOOL_TYPE: "function",
        sc.AGENT_LEGS_ACTION: action,
        sc.AGENT_LEGS_SESSION: session,
    }
    if description:
        attributes[sc.GEN_AI_TOOL_DESCRIPTION] = truncate(description, settings.max_attribute_chars)
    if call_id:
        attributes[sc.GEN_AI_TOOL_CALL_ID] = call_id
    return tracer.start_span(
        f"{settings.span_name_prefix} {tool_name}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
    )


def shown_result(rec: CallRecord, redact: Redactor, settings: TelemetrySettings) -> str | None:
    """The result as the span and the log line show it: the text the model reads, as it reads it (a JSON
    string would quote and escape it), redacted, then truncated to ``max_attribute_chars``."""
    if rec.result is None:
        return None
    text = rec.result if isinstance(rec.result, str) else dumps(rec.result)
    return truncate(redact.text(text), settings.max_attribute_chars)


def end_span(span: Span, rec: CallRecord, redact: Redactor, settings: TelemetrySettings, result: str | None = None) -> None:
    """Set the outcome's attributes (redacted, truncated) and status, and end the span. ``result``: the
    ``shown_result`` when the caller made it already (the log line shows the same text)."""
    if span.is_recording():  # not when sampled out: the attributes would be dropped unread
        limit = settings.max_attribute_chars
        attributes: dict[str, Any] = {sc.AGENT_LEGS_DECISION: rec.decision, sc.AGENT_LEGS_OUTCOME: rec.outcome}
        if rec.rule:
            attributes[sc.AGENT_LEGS_RULE] = rec.rule
        if rec.approval:
            attributes[sc.AGENT_LEGS_APPROVAL_DECISION] = rec.approval["decision"]
            if rec.approval.get("by"):
                attributes[sc.AGENT_LEGS_APPROVAL_BY] = redact.text(str(rec.approval["by"]))
        if settings.capture_content:
            attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = truncate(json_text(redact.data(rec.arguments)), limit)
            if result is None:
                result = shown_result(rec, redact, settings)
            if result is not None:
                attributes[sc.GEN_AI_TOOL_CALL_RESULT] = result
        if rec.outcome != "ok":
            attributes[sc.ERROR_TYPE] = rec.outcome
            error_message = redact.text(rec.error_message) if rec.error_message else None
            span.set_status(Status(StatusCode.ERROR, error_message or rec.outcome))
        span.set_attributes(attributes)
    span.end()
