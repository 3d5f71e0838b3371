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

from llama_index.core.workflow import Context
from workflows.events import HumanResponseEvent, InputRequiredEvent

from agent_legs import ApprovalDecision, ApprovalRequest, ConfigError

__all__ = ["wait_for_decision"]


async def wait_for_decision(ctx: Context | None, request: ApprovalRequest, timeout_s: float | None) -> ApprovalDecision:
    """Emit the approval request into the workflow's stream and wait for its own answer.

    The workflow replays the whole step when the answer arrives: the id is stable across replays (the
    tool call id, else a digest of the request), so the request is emitted once and the replay finds
    the answer.
    """
    if ctx is None:
        raise ConfigError("approvals='events' waits for a HumanResponseEvent in a workflow: call the tool from an "
                          "agent (FunctionAgent, AgentWorkflow), which passes its Context")
    payload = request.payload()
    approval_id = request.call_id or "approval-" + hashlib.sha256(
        json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
    payload["id"] = approval_id
    question = f"Approve {request.tool_name}? {request.reason}"
    try:
        event = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix=question, approval=payload),
            waiter_id=approval_id, requirements={"approval_id": approval_id}, timeout=timeout_s)
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
