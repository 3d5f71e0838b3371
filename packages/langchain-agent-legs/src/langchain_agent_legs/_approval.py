"""Approval where the LangChain agent runs: LangGraph interrupts and ``HumanInTheLoopMiddleware``.

Approval (``approvals=``): ``"approver"`` (default) asks ``Legs.approver``. ``"interrupt"`` pauses the
graph inside this tool's node: the core's pre-check says whether the call needs approval and what to
ask; ``langgraph.types.interrupt()`` carries that JSON dict (``type="agent_legs.approval"``); the resume
value (``{"type": "approve" | "reject" | "edit", ...}``) is handed to the core, which re-validates and
re-checks an edit, records who decided and claims the call once (the tool call id is the key), so a
node that LangGraph re-runs on resume, or a graph replayed from an older checkpoint, cannot run an
approved call twice. ``"middleware"`` takes the decision LangChain's ``HumanInTheLoopMiddleware``
(``interrupt_mode="per_call"``, ``interrupt_on=toolkit.interrupt_on()``) received for this very call
as the approval: the person is asked once; a call that needs approval and has no such decision
does not run.

``interrupt_on()`` is the ``HumanInTheLoopMiddleware`` configuration generated from the policy: the
tools whose actions can need approval, each asked only when the core's pre-check says this very call
needs it (conditions, standing rules), with the policy's reason as the description.

Threat model: the model controls the tool arguments, never the decision. A resume value or a
middleware decision of the wrong shape is a rejection; the core validates and re-decides edits, and
claims each call once, so no replay or repeated answer runs an approved call twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from agent_legs import ActionSpec, ApprovalDecision, ConfigError, Legs
from agent_legs._policy import PolicyEngine

__all__ = ["Approvals", "graph_decision", "interrupt_on"]

Approvals = Literal["approver", "interrupt", "middleware"]


def graph_decision(
    legs: Legs, action: str, tool: str, mode: str, kwargs: dict[str, Any], session: str, call_id: str | None
) -> ApprovalDecision | None:
    """The decision for this call when the graph decides (``interrupt``/``middleware``), else ``None``
    (the core asks its approver, or needs nobody). Raises ``GraphInterrupt`` to pause the graph."""
    if mode == "approver":
        return None
    request = legs.approval_request(action, kwargs, session=session, call_id=call_id, standing_rules=False)
    if request is None:
        return None  # allowed, or refused by run() anyway (invalid, denied)
    conf = _graph_configurable(mode)
    from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER, CONFIG_KEY_SCRATCHPAD
    from langgraph.types import interrupt

    # A person already answered this task (its resume value is waiting): that answer decides, even if a
    # standing rule made meanwhile (by a sibling call's decision) would cover the call. Otherwise a
    # standing rule spares the question.
    answered = bool(getattr(conf.get(CONFIG_KEY_SCRATCHPAD), "resume", None))
    if not answered and legs.approval_request(action, kwargs, session=session, call_id=call_id) is None:
        return None
    if mode == "middleware":
        return _middleware_decision(conf, tool, call_id)

    if conf.get(CONFIG_KEY_CHECKPOINTER) is None:
        raise ConfigError(
            f"{tool} needs approval and approvals='interrupt' pauses the graph, which needs a checkpointer: "
            "compile the graph with one, e.g. create_agent(..., checkpointer=InMemorySaver()) (SqliteSaver or "
            "PostgresSaver to survive a restart)"
        )
    answer = interrupt(request.payload(), response_schema=_DECISION_SCHEMA)
    try:
        return ApprovalDecision.coerce(answer)
    except ValueError as exc:  # refused (and logged as such): an answer of the wrong shape approves nothing
        return ApprovalDecision(type="reject", message=f"the approval answer was not understood ({exc})")


# The decision's JSON schema, shown to clients with the interrupt (not enforced by LangGraph: the core validates).
_DECISION_SCHEMA: dict[str, Any] = {k: v for k, v in ApprovalDecision.model_json_schema().items() if k != "description"}


def _graph_configurable(mode: str) -> dict[str, Any]:
    try:
        from langgraph.config import get_config

        return dict(get_config().get("configurable") or {})
    except (ImportError, RuntimeError):
        raise ConfigError(
            f"approvals={mode!r} works inside a LangGraph graph (create_agent); this call is "
            "outside one: use approvals='approver' and Legs(approver=...)"
        ) from None


def _middleware_decision(conf: dict[str, Any], tool: str, call_id: str | None) -> ApprovalDecision:
    """The decision ``HumanInTheLoopMiddleware`` (per-call mode) received in this tool call's own task.

    The middleware interrupts in ``wrap_tool_call``, in the task that then runs this tool, so the answer
    is among the task's resume values; only approve and edit decisions let the tool run at all. No
    decision there (the middleware missing, batched mode, a ``when`` that skipped the call): refused.
    """
    from langgraph._internal._constants import CONFIG_KEY_SCRATCHPAD

    scratchpad = conf.get(CONFIG_KEY_SCRATCHPAD)
    answers = [a for a in (getattr(scratchpad, "resume", None) or []) if isinstance(a, Mapping)]
    if len(answers) != 1 or answers[0].get("type") not in ("approve", "edit"):
        return ApprovalDecision(
            type="reject",
            message=(
                f"no HumanInTheLoopMiddleware decision was made for {tool} call {call_id} (developers: add "
                "HumanInTheLoopMiddleware(interrupt_on=toolkit.interrupt_on(), interrupt_mode='per_call'))"
            ),
        )
    answer = answers[0]
    by = answer.get("by") if isinstance(answer.get("by"), str) else None
    if answer["type"] == "edit":
        edited = answer.get("edited_action")
        args = edited.get("args") if isinstance(edited, Mapping) else None
        return ApprovalDecision(type="edit", args=dict(args) if isinstance(args, Mapping) else {}, by=by)
    return ApprovalDecision(type="approve", by=by)


def interrupt_on(
    legs: Legs, specs: list[ActionSpec], session: str | None, allowed_decisions: list[str] | None = None
) -> dict[str, Any]:
    """Use it with ``interrupt_mode="per_call"`` and ``approvals="middleware"``: the middleware asks the
    person, the toolkit takes that decision as the approval (recorded with ``by`` when the decision
    carries one), and nobody is asked twice."""
    engine = PolicyEngine(legs.policy)
    decisions = list(allowed_decisions or ["approve", "edit", "reject"])
    return {
        spec.tool_name: {
            "allowed_decisions": decisions,
            "when": _when(legs, spec.name, session),
            "description": _describe(legs, spec.name, session),
        }
        for spec in specs
        if engine.decide(spec.name).kind == "approve"
    }


def _session_of(fixed: str | None, config: Any) -> str:
    from ._tool import _run_session

    if fixed:
        return fixed
    if config is None:
        try:
            from langgraph.config import get_config

            config = get_config()
        except (ImportError, RuntimeError):
            config = None
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return str(thread) if thread else _run_session()


def _when(legs: Legs, action: str, session: str | None) -> Callable[[Any], bool]:
    def when(request: Any) -> bool:
        call = request.tool_call
        config = getattr(getattr(request, "runtime", None), "config", None)
        return (
            legs.approval_request(action, call.get("args"), session=_session_of(session, config), call_id=call.get("id"))
            is not None
        )

    return when


def _describe(legs: Legs, action: str, session: str | None) -> Callable[..., str]:
    def describe(tool_call: Any, state: Any, runtime: Any) -> str:
        request = legs.approval_request(
            action, tool_call.get("args"), session=_session_of(session, None), call_id=tool_call.get("id")
        )
        return request.reason if request is not None else f"{action} needs approval"

    return describe
