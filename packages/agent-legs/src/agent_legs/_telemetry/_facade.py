"""The one place that emits Agent Legs telemetry: the ``Telemetry`` facade (one span and one action-log line per call).

Every ``run``/``arun`` call produces exactly one span (OpenTelemetry GenAI conventions plus
``agent_legs.*`` attributes, ``_spans``) and exactly one JSON line in ``<state_dir>/actions.jsonl``
(``_log_writer``). The action log is written directly (not through a span processor), so it stays
complete whatever the tracer provider or collector does.

Invariants of the action log (threat model: the host process may be SIGKILLed at any instruction,
the disk may fill up, the state dir may lose its permissions; the model may send payloads of any size):

* write-ahead: a call's intent line is on disk (``IntentJournal``) before its handler can have any
  effect; a call whose intent cannot be written does not run (``unavailable``). So every effect that
  took place has a record: its outcome line, or, when the process died first, an ``unfinished`` one;
* every line is whole JSON: one ``write(2)`` per line, a short write rolled back, a torn tail fenced off;
* a line's size does not grow with the payload: long argument values are a redacted preview, size and hash;
* failures to write are classified (disk full, permission denied, too many open files...) and warned once
  per cause, never a traceback per call.

Span export is best effort and bounded (``_export``): ``shutdown`` returns within its bound whatever the
collector does, and the spans lost are counted (``Telemetry.spans_dropped``).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from .._errors import ActionError
from .._secrets import Redactor
from .._settings import TelemetrySettings
from ._export import GuardedExporter, application_provider, default_provider
from ._journal import PENDING_DIR, IntentJournal, recover_pending
from ._log_writer import ActionLog, ActionLogError, encode_line
from ._records import CallRecord, bounded_arguments, target
from ._spans import Tracer, caller_context, discover_parent_hooks, end_span, shown_result, start_span

__all__ = ["Telemetry"]

log = logging.getLogger("agent_legs")

_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text (swapped whole: threads)
_last: tuple[int, str] = (-1, "")  # the last millisecond's whole text


def _now() -> str:
    """The current UTC time as ``datetime.isoformat(timespec="milliseconds")`` writes it: the date and
    time formatted once per second, the whole text once per millisecond (a call's two lines often share it)."""
    global _second, _last
    ms = int(time.time() * 1000)
    cached = _last
    if cached[0] == ms:
        return cached[1]
    sec, frac = divmod(ms, 1000)
    whole = _second
    if whole[0] != sec:
        whole = _second = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    text = f"{whole[1]}.{frac:03d}+00:00"
    _last = (ms, text)
    return text


# Record ids: 64 random bits each, from a generator of our own seeded by the OS (not the ``random``
# module's shared one, which an application may seed with a constant) and seeded again in a forked
# child, so no two processes share a sequence. One ``getrandom(2)`` per call cost more than the rest
# of making the id. The ids name lines (``logged_ids`` looks them up): unique, not secret.
_ids = random.Random(os.urandom(32))  # noqa: S311 - ids must be unique, not unguessable
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def _record_id() -> str:
    return f"{_ids.getrandbits(64):016x}"  # inlined where a call makes one (a function call less)


def _hex_ids(span: Span) -> tuple[str | None, str | None]:
    """The span's trace and span ids as ``:032x`` and ``:016x`` write them (``None`` for an invalid span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return (None, None)
    return (ctx.trace_id.to_bytes(16, "big").hex(), ctx.span_id.to_bytes(8, "big").hex())


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
        self._exporter: GuardedExporter | None = None
        if tracer_provider is not None:
            self.tracer = Tracer(tracer_provider, None)
        elif application_provider() is not None:
            self.tracer = Tracer(None, None)
        else:
            self._own_provider, self._exporter = default_provider(settings)
            self.tracer = Tracer(None, self._own_provider)
        self._explicit = tracer_provider is not None
        discover_parent_hooks()  # once per process: the first call does not pay for it
        self.action_log = ActionLog(state_dir / "actions.jsonl")
        self.journal = IntentJournal(state_dir / PENDING_DIR)
        # record id -> its intent line's entry (the fields the outcome line shares with it): built once per call
        self._intents: dict[str, dict[str, Any]] = {}
        self._log_problem: str | None = None  # the last write failure, warned once until it changes
        self._dropped_at_close: int | None = None
        # Actions cut short by a process that died (SIGKILL, OOM, crash) get their "unfinished" line now.
        recovered = recover_pending(self.action_log)
        if recovered:
            log.warning(
                "%d action(s) of a process that ended before they finished are in the action log as outcome 'unfinished' (%s)",
                recovered,
                self.action_log.path,
            )

    @property
    def spans_dropped(self) -> int:
        """Spans of our own provider that did not reach the collector (queue full, export failed, or still
        queued at ``close()``). Exact after ``shutdown``; 0 when spans go to the caller's provider."""
        if self._dropped_at_close is not None:
            return self._dropped_at_close
        return self._exporter.dropped if self._exporter is not None else 0

    # -- the write-ahead intent ------------------------------------------------------------------
    def intent(self, span: Span, rec: CallRecord) -> str:
        """Put the call's intent line on disk before its effect can happen; returns the record id.

        Raises ``ActionError("unavailable")`` when the line cannot be written: the action must not run.
        The fields both lines share (ids, target, approval, bounded arguments) are computed here once,
        in the intent line's own dict (built once, in the line's order); ``finish`` reuses them.
        """
        record_id = f"{_ids.getrandbits(64):016x}"
        redact = self.redactor
        ids = rec.ids or _hex_ids(span)
        arguments = rec.arguments
        entry: dict[str, Any] = {
            "intent": record_id,
            "time": _now(),
            "trace_id": ids[0],
            "span_id": ids[1],
            "action": rec.action,
            "session": rec.session,
            "call_id": rec.call_id,
            "decision": rec.decision,
            "rule": rec.rule,
            "target": target(redact.data(arguments) if redact else arguments),  # scrubbed whole, then cut
        }
        if rec.approval:  # who decided: on the intent line too, so a call cut short by a crash keeps it
            entry["approval"] = redact.data(rec.approval)
        journal = self.journal
        entry["pid"] = journal.pid
        if self.settings.capture_content and (bounded := bounded_arguments(arguments, redact)) is not None:
            entry["arguments"] = bounded
        try:
            journal.append_intent(record_id, encode_line(entry))
        except ActionLogError as exc:
            self._log_failed(str(exc))
            raise ActionError(
                "unavailable",
                f"the action log cannot be written: {exc.reason}; {rec.action} did not run",
                hint="Nothing was done. The log's disk or directory needs an operator (free space, permissions, "
                "open files); tell the user instead of retrying.",
            ) from None
        self._intents[record_id] = entry
        return record_id

    def _log_failed(self, reason: str) -> None:
        if self._log_problem != reason:
            self._log_problem = reason
            log.warning("the action log cannot be written: %s; actions fail closed until it can", reason)

    def _common(self, span: Span, rec: CallRecord) -> dict[str, Any]:
        """The fields of a call's outcome line known before it ends, for a call without an intent line
        (refused before its handler): what ``intent`` puts in its entry."""
        redact = self.redactor
        ids = rec.ids or _hex_ids(span)
        common: dict[str, Any] = {
            "trace_id": ids[0],
            "span_id": ids[1],
            "target": target(redact.data(rec.arguments) if redact else rec.arguments),  # scrubbed whole, then cut
        }
        if rec.approval:
            common["approval"] = redact.data(rec.approval)
        if self.settings.capture_content:
            common["arguments"] = bounded_arguments(rec.arguments, redact)
        return common

    @property
    def provider(self) -> str:
        """Where the next span goes: ``explicit`` (passed to Legs), ``application`` (the global one) or ``internal``."""
        if self._explicit:
            return "explicit"
        return "application" if application_provider() is not None else "internal"

    # -- spans -------------------------------------------------------------------------------
    def start(
        self,
        tool_name: str,
        action: str,
        session: str,
        call_id: str | None,
        parent: otel_context.Context | None,
        description: str | None = None,
    ) -> Span:
        """Open the call's span (see ``_spans.start_span``; its ids only when our own provider records nothing)."""
        tracer = self.tracer
        if tracer._silent_ids is not None and (silent := tracer.silent_span(parent)) is not None:
            return silent
        return start_span(self.tracer, self.settings, tool_name, action, session, call_id, parent, description)

    def finish(self, span: Span, rec: CallRecord) -> None:
        """Close the call's span and write its action-log line (both redacted)."""
        redact = self.redactor
        capture = self.settings.capture_content
        result = shown_result(rec, redact, self.settings) if capture else None  # the span's and the line's
        if span.is_recording():
            end_span(span, rec, redact, self.settings, result)
        else:  # sampled out: nothing to set
            span.end()

        record_id = rec.record_id
        known = self._intents.pop(record_id, None) if record_id is not None else None
        if known is None:  # refused before its handler: no intent line to take the shared fields from
            known = self._common(span, rec)
            record_id = record_id or f"{_ids.getrandbits(64):016x}"
        error = rec.error_message
        entry: dict[str, Any] = {
            "time": _now(),
            "trace_id": known["trace_id"],
            "span_id": known["span_id"],
            "action": rec.action,
            "session": rec.session,
            "call_id": rec.call_id,
            "decision": rec.decision,
            "outcome": rec.outcome,
            "duration_ms": round(rec.duration_ms, 3),
            "error": redact.text(error) if error else None,
            "rule": rec.rule,
            "target": known["target"],
        }
        if "approval" in known:
            entry["approval"] = known["approval"]
        entry["id"] = record_id
        if capture:
            entry["arguments"] = known.get("arguments")
            if result is not None:  # the text the model read (the console's call detail), as on the span
                entry["result"] = result
            if rec.artifacts:  # screenshots, figures: the console shows a session's latest
                entry["artifacts"] = redact.data(rec.artifacts)
        try:
            self.action_log.write_line(encode_line(entry))
        except ActionLogError as exc:
            # After the effect: its intent line stays in the journal and reads as "unfinished".
            self._log_failed(str(exc))
            return
        if self._log_problem is not None:
            self._log_problem = None
            log.info("the action log can be written again (%s)", self.action_log.path)
        if rec.record_id is not None:
            self.journal.done(rec.record_id)

    def shutdown(self, timeout_s: float = 1.2) -> None:
        """Close the action log; flush and stop our own provider within ``timeout_s`` whatever the collector does.

        ``BatchSpanProcessor.force_flush`` ignores its timeout (it exports on the calling thread, one
        request per batch, each with its own timeout and retries), so both steps run on a daemon helper
        thread that we wait for with a bound; past it the exporter is told to give up and the thread is
        left to die with the process. Our provider is built without the SDK's exit hook (which would
        wait on a stuck export again at interpreter exit), so exit is not held either. Spans that did
        not reach the collector are counted (``spans_dropped``) and reported in one warning. An
        application's own provider is never flushed or shut down here.
        """
        self.action_log.close()
        self.journal.close()
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
        if exporter is None:
            return
        if t.is_alive():
            exporter.abandon()
            t.join(0.1)
        self._dropped_at_close = dropped = exporter.dropped_at_close()
        if dropped:
            log.warning(
                "%d span(s) were dropped: they never reached the collector at %s (queue full, export "
                "failed, or still queued at close). Actions are unaffected; the action log (agent-legs "
                "log) is complete.",
                dropped,
                exporter.endpoint,
            )

    # -- nesting -------------------------------------------------------------------------------
    # The OpenTelemetry context our span is parented to; called on the caller's thread, once per call
    # (``_spans.caller_context``: the caller's context, or the span a framework adapter's parent hook names).
    caller_context = staticmethod(caller_context)
