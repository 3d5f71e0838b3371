"""The LangChain-specific parenting fix: our ``execute_tool`` span under OpenInference's tool span.

OpenInference's LangChain instrumentor (``openinference-instrumentation-langchain``, used by Phoenix and
Arize) creates a span per LangChain tool run but never makes it current (attaching context from
callbacks is unsafe), so a ``legs.run`` inside a LangChain tool would land beside the tool span instead
of under it. When that instrumentor is active, its ``get_current_span()`` names the span of the current
LangChain run: ``openinference_tool_span`` returns it, and the core parents the call's span to it
(unless the caller opened a span of its own inside the tool run, which stays the parent).

The core knows nothing of this: the hook is declared in this package's ``agent_legs_parent_spans``
entry point, named after the module that must be imported for it to apply
(``openinference.instrumentation.langchain``), so it also serves a user's own ``@tool`` functions that
call ``legs.run()`` without importing this package; importing the package registers it as well (a
checkout used without installed metadata). The instrumentor is never imported here: the hook only looks
when the application did. Threat model: another version of the instrumentor may have another API; the
hook then returns ``None`` (nesting is best effort, the action is not).
"""

from __future__ import annotations

import sys
from typing import cast

from opentelemetry.trace import Span

from agent_legs._telemetry import register_parent_hook

__all__ = ["TRIGGER", "openinference_tool_span", "register"]

TRIGGER = "openinference.instrumentation.langchain"


def openinference_tool_span() -> Span | None:
    """The span OpenInference opened for the current LangChain run, or ``None`` (not instrumented, no run)."""
    module = sys.modules.get(TRIGGER)
    if module is None:
        return None
    if not module.LangChainInstrumentor().is_instrumented_by_opentelemetry:
        return None  # get_current_span() would print a complaint to stdout
    span = module.get_current_span()
    return None if span is None else cast(Span, span)


def register() -> None:
    """Register the hook with the core (idempotent)."""
    register_parent_hook(TRIGGER, openinference_tool_span)
