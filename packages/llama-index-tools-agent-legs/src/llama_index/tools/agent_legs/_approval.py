"""Approval where the LlamaIndex agent runs: ``InputRequiredEvent`` out, ``HumanResponseEvent`` in.

Approval (``approvals="events"``): a call the policy sends to approval emits
``InputRequiredEvent(prefix=<question>, approval=<the approval dict, with an "id">)`` and waits in
the workflow for ``HumanResponseEvent(response="approve" | "reject" | <JSON decision>,
approval_id=<that id>)``; the wait is matched on the id (the model's tool call id), so several
calls can wait at once and each gets its own answer. The core applies the decision (an edit is
validated and decided again), records who decided (``by`` in the decision, or on the event) and
claims the call once: a replayed step never runs an approved call twice. An answer of the wrong
shape is a rejection. ``"approver"`` (the default) asks ``Legs.approver``.

Threat model: the model controls the tool arguments, never the answer. An answer of the wrong shape
or for another id approves nothing; the core validates and re-decides an edit and claims the call once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from llama_index.core.workflow import Context
from workflows.events import HumanResponseEvent, InputRequiredEvent

from agent_legs import ApprovalDecision, ApprovalRequest, ConfigError, Legs

__all__ = ["decide_in_workflow", "wait_for_decision"]

log = logging.getLogger("agent_legs")

_ASKED_KEY = "agent_legs_approval_asked:"


async def decide_in_workflow(
    legs: Legs,
    action: str,
    kwargs: dict[str, Any],
    session: str,
    call_id: str | None,
    ctx: Context | None,
    timeout_s: float | None,
) -> ApprovalDecision | None:
    """The person's decision for this call, or ``None`` when nobody needs asking.

    A standing rule spares the question, but not an answer already asked for: once the request is out,
    the replayed step takes the person's answer even if a rule made meanwhile would cover the call.
    """
    request = legs.approval_request(action, kwargs, session=session, call_id=call_id, standing_rules=False)
    if request is None:
        return None  # allowed, or refused by run() anyway (invalid, denied)
    asked = ctx is not None and await _was_asked(ctx, _approval_id(request))
    if not asked and legs.approval_request(action, kwargs, session=session, call_id=call_id) is None:
        return None
    return await wait_for_decision(ctx, request, timeout_s)


async def _was_asked(ctx: Context, approval_id: str) -> bool:
    try:  # the run's store survives the step's replay (and a serialised Context)
        return bool(await ctx.store.get(_ASKED_KEY + approval_id, default=False))
    except Exception:  # a typed state model without room for our key: a standing rule made meanwhile covers it
        return False


async def _mark_asked(ctx: Context, approval_id: str) -> None:
    try:
        await ctx.store.set(_ASKED_KEY + approval_id, True)
    except Exception:  # see _was_asked
        log.debug("cannot record the approval request %s in the workflow state", approval_id, exc_info=True)


def _approval_id(request: ApprovalRequest) -> str:
    return (
        request.call_id
        or "approval-" + hashlib.sha256(json.dumps(request.payload(), sort_keys=True, default=str).encode()).hexdigest()[:24]
    )


async def wait_for_decision(ctx: Context | None, request: ApprovalRequest, timeout_s: float | None) -> ApprovalDecision:
    """Emit the approval request into the workflow's stream and wait for its own answer.

    The workflow replays the whole step when the answer arrives: the id is stable across replays (the
    tool call id, else a digest of the request), so the request is emitted once and the replay finds
    the answer.
    """
    if ctx is None:
        raise ConfigError(
            "approvals='events' waits for a HumanResponseEvent in a workflow: call the tool from an "
            "agent (FunctionAgent, AgentWorkflow), which passes its Context"
        )
    payload = request.payload()
    approval_id = payload["id"] = _approval_id(request)
    await _mark_asked(ctx, approval_id)
    question = f"Approve {request.tool_name}? {request.reason}"
    try:
        event = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_event=InputRequiredEvent(prefix=question, approval=payload),
            waiter_id=approval_id,
            requirements={"approval_id": approval_id},
            timeout=timeout_s,
        )
    except TimeoutError:
        return ApprovalDecision(type="reject", message=f"no answer within {timeout_s:g} s")
    try:
        decision = ApprovalDecision.coerce(event.get("response"))
    except ValueError as exc:
        return ApprovalDecision(type="reject", message=f"the approval answer was not understood ({exc})")
    by = event.get("by")
    if decision.by is None and isinstance(by, str) and by:
        decision = decision.model_copy(update={"by": by})
    return decision
