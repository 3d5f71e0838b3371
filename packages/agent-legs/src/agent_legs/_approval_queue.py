"""The approval queue: ``Legs(approver="queue")``, ``legs.approvals`` and ``agent-legs approvals``.

A call the policy sends to approval is written to the state store (redacted arguments, the rule,
the session) and waits there, polling with back-off, until a person or a rule decides it from any
process that shares the store (same state directory, or same database), or until
``policy.approval_timeout_s`` passes: then it is refused (``approval_denied``, saying it expired).

A decision is ``approved``, ``edited`` (replacement arguments, validated and checked by the policy
again in the waiting call, as any ``edit`` decision) or ``rejected`` (with the message the model is told).

Invariants: a request is decided exactly once (the store's atomic update; a second decision, an
unknown id or an expired one is an ``ApprovalError``, never a second run); the waiting call runs only
on an ``approved`` row; a waiter that is cancelled marks its request expired, so nobody approves a
call that no longer waits. The model never sees the queue: it only learns the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import ActionError
from ._models import ApprovalRequest
from ._state import StateStore, StoreUnavailable
from ._state._base import ApprovalError, ApprovalRow

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._secrets import Secrets
    from ._settings import Settings

__all__ = ["ApprovalError", "ApprovalQueue", "ApprovalRow", "QueueApprover"]

log = logging.getLogger("agent_legs")
T = TypeVar("T")

_POLL_FIRST_S, _POLL_MAX_S = 0.05, 1.0


_DECIDED = ("approved", "edited", "rejected")
_TYPES = {"approved": "approve", "edited": "edit", "rejected": "reject"}


def decision_of(row: ApprovalRow) -> dict[str, Any]:
    """A decided row as the pipeline's decision dict (the shape of LangChain's HITL decisions, which
    ``ApprovalDecision`` validates strictly: the queue id stays in the queue, the log names who decided).
    An edit's arguments go through validation and the whole policy again in the waiting call."""
    decision: dict[str, Any] = {"type": _TYPES[row.state], "message": row.message, "by": row.by}
    if row.state == "edited":
        decision["args"] = row.args
    if row.remember is not None and row.state != "rejected":
        decision["remember"] = row.remember
    return decision


class QueueApprover:
    """The approver behind ``Legs(approver="queue")``: enqueue, wait for a decision, return it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, request: ApprovalRequest) -> dict[str, Any]:
        return await self.runtime.on_loop(self._wait(request))

    async def _wait(self, request: ApprovalRequest) -> dict[str, Any]:
        store = self.runtime.state
        timeout_s = self.runtime.policy.approval_timeout_s
        row = await store.enqueue_approval(
            action=request.action,
            tool_name=request.tool_name,
            arguments=request.arguments,
            session=request.session,
            reason=request.reason,
            call_id=request.call_id,
            timeout_s=timeout_s,
        )
        log.info("approval %s queued for %s (session %r): agent-legs approve %s", row.id, request.action, request.session, row.id)
        delay = _POLL_FIRST_S
        try:
            while (remaining := row.expires - time.time()) > 0:
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 1.5, _POLL_MAX_S)
                try:
                    current = await store.approval(row.id)
                except StoreUnavailable as exc:  # keep waiting: the decision is in the store, not lost
                    log.warning("approval %s: %s", row.id, exc.message)
                    continue
                if current is not None and current.state != "pending":
                    return self._decided(request, current, timeout_s)
            final = await store.expire_approval(row.id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await store.expire_approval(row.id)
            raise
        if final is not None and final.state in _DECIDED:
            return decision_of(final)  # decided in the last instant: the decision wins
        return self._decided(request, final, timeout_s)

    @staticmethod
    def _decided(request: ApprovalRequest, row: ApprovalRow | None, timeout_s: float) -> dict[str, Any]:
        if row is not None and row.state in _DECIDED:
            return decision_of(row)
        raise ActionError(
            "approval_denied",
            f"{request.action} waited {timeout_s:g} s in the approval queue (request "
            f"{row.id if row else '?'}) and expired undecided (policy.approval_timeout_s)",
            hint="Nobody decided in time: do not retry right away. Tell the user the action needs their "
            "approval (agent-legs approvals lists waiting requests).",
        )


class ApprovalQueue:
    """The pending approvals of a state store, to list and decide (``legs.approvals``, or standalone:
    ``ApprovalQueue.open(state_dir=..., settings=...)``, which every process sharing the store sees)."""

    def __init__(
        self, store: StateStore, run: Callable[[Coroutine[Any, Any, Any]], Any], close: Callable[[], None] | None = None
    ) -> None:
        self._store = store
        self._run = run
        self._close = close

    @classmethod
    def open(cls, state_dir: str | Path, settings: Settings | None = None, secrets: Secrets | None = None) -> ApprovalQueue:
        """A queue of its own (own event loop, own connections), e.g. for a review tool or the CLI."""
        from ._settings import Settings
        from ._state import open_store

        store = open_store(Path(state_dir), settings if settings is not None else Settings(), secrets)
        loop = asyncio.new_event_loop()

        def close() -> None:
            loop.run_until_complete(store.aclose())
            loop.close()

        return cls(store, loop.run_until_complete, close)

    def pending(self) -> list[ApprovalRow]:
        """Requests waiting for a decision, oldest first."""
        result: list[ApprovalRow] = self._run(self._store.pending_approvals())
        return result

    def get(self, approval_id: str) -> ApprovalRow | None:
        result: ApprovalRow | None = self._run(self._store.approval(approval_id))
        return result

    def approve(self, approval_id: str, by: str | None = None, remember: str | None = None) -> ApprovalRow:
        """Approve a waiting request (once); ``ApprovalError`` if unknown, decided or expired.
        ``remember="session"``: later calls of the same action in that session need no approval
        (a standing rule, added by the waiting call when it runs)."""
        result: ApprovalRow = self._run(self._store.decide_approval(approval_id, "approved", by=by, remember=remember))
        return result

    def edit(self, approval_id: str, args: dict[str, Any], by: str | None = None, remember: str | None = None) -> ApprovalRow:
        """Approve a waiting request with replacement arguments (once). The waiting call validates them
        and asks the policy again: an edit the policy denies is refused there and nothing runs."""
        if not isinstance(args, dict):
            raise ApprovalError(f"the edited arguments must be a JSON object, not {type(args).__name__}")
        result: ApprovalRow = self._run(self._store.decide_approval(approval_id, "edited", by=by, args=args, remember=remember))
        return result

    def reject(self, approval_id: str, message: str | None = None, by: str | None = None) -> ApprovalRow:
        """Reject a waiting request (once); ``message`` is what the model is told."""
        result: ApprovalRow = self._run(self._store.decide_approval(approval_id, "rejected", by=by, message=message))
        return result

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def __enter__(self) -> ApprovalQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
