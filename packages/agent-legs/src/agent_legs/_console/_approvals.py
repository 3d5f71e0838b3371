"""The approvals view: the approval queue's pending requests and the decisions taken on the page.

A decision goes to the state store (``decide_approval``: atomic, once) with the console user as
``by``; the call waiting in ``Legs(approver="queue")`` picks it up. ``approve`` (optionally "always
for this session": a standing rule the waiting call adds, for later calls of the same action in that
session), ``reject`` (the message is what the model is told) and ``edit`` (replacement arguments as a
JSON object, which the waiting call validates and checks against the whole policy again: an edit the
policy denies is refused there and nothing runs).

Bad input gets a clear refusal and changes nothing: an unknown id (404), a request already decided or
expired (409, naming who decided and when: a stale page), arguments that are not a JSON object (400).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._state import StateStore
from .._state._base import ApprovalError, ApprovalRow

__all__ = ["DECISIONS", "Approvals", "Outcome"]

DECISIONS = ("approve", "reject", "edit")
_MESSAGE_MAX = 2000
_ARGS_MAX = 200_000


@dataclass(frozen=True)
class Outcome:
    status: int
    message: str
    row: ApprovalRow | None = None


class Approvals:
    def __init__(self, store: StateStore, by: str) -> None:
        self.store, self.by = store, by

    async def pending(self) -> list[ApprovalRow]:
        return await self.store.pending_approvals()

    async def get(self, approval_id: str) -> ApprovalRow | None:
        return await self.store.approval(approval_id)

    async def decide(self, approval_id: str, kind: str, form: dict[str, Any]) -> Outcome:
        if kind not in DECISIONS:
            return Outcome(400, f"unknown decision {kind!r} (approve, reject or edit)")
        remember = "session" if form.get("always") in ("on", "true", "1") and kind != "reject" else None
        message = str(form.get("message") or "").strip()[:_MESSAGE_MAX] or None
        args: dict[str, Any] | None = None
        if kind == "edit":
            text = str(form.get("args") or "")
            if len(text) > _ARGS_MAX:
                return Outcome(400, f"the edited arguments are over {_ARGS_MAX} characters; nothing was decided")
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                return Outcome(400, f"the edited arguments are not valid JSON ({exc}); nothing was decided")
            if not isinstance(parsed, dict):
                return Outcome(400, "the edited arguments must be a JSON object; nothing was decided")
            args = parsed
        state = {"approve": "approved", "reject": "rejected", "edit": "edited"}[kind]
        try:
            row = await self.store.decide_approval(approval_id, state, by=self.by, message=message, args=args, remember=remember)
        except ApprovalError as exc:
            return Outcome(404 if "no approval request" in str(exc) else 409, str(exc))
        what = {
            "approved": "approved: the call runs",
            "rejected": "rejected: the agent is told" + (f" “{message}”" if message else " it was not approved"),
            "edited": "approved with edited arguments: the call checks them against the policy, then runs",
        }[state]
        always = " (and later calls of this action in this session, without asking)" if remember else ""
        return Outcome(200, f"{row.action} {what}{always}; decided by {self.by}", row)
