"""The sessions view: each session's recent calls, browser tab, code kernel and budgets.

Recent calls, the latest screenshot (``browser.screenshot``'s artifact) and the code kernel's state
(what the latest ``code.*`` call left: started, reset or failed; the figures of the latest
``code.run`` that drew any) come from the action log (``LogView``). Which worker holds a session and
when it last beat come from the state store's session registry (a kernel is ``alive`` when the latest
code call started it and a worker that beat within ``settings.session_ttl_s`` still holds the
session); budgets used and left from the state store's counters for the policy's budgets (the
console's config: ``--config``). Read-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._budgets import usage
from .._state import StateStore
from ._data import LogView, SessionSummary

if TYPE_CHECKING:
    from .._policy import Policy

__all__ = ["BudgetUse", "SessionView", "sessions_view"]


@dataclass(frozen=True)
class BudgetUse:
    key: str
    per: str
    limit: int
    used: int

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass
class SessionView:
    summary: SessionSummary
    workers: list[str]
    heartbeat: float | None
    budgets: list[BudgetUse]
    held: bool  # a worker holds the session and beat within the registry's staleness bound

    @property
    def kernel(self) -> str:
        """``alive`` (started by the latest code call, in a session a live worker holds), else what the
        latest code call left: ``none``, ``reset``, ``failed``, or ``ended`` (its worker let the session go)."""
        state = self.summary.kernel
        if state == "started":
            return "alive" if self.held else "ended"
        return state


async def sessions_view(
    view: LogView, store: StateStore, policy: Policy | None, stale_s: float = 1800.0
) -> tuple[list[SessionView], list[BudgetUse]]:
    """The sessions (most recently active first) and the deployment-wide budgets."""
    budgets = list(policy.budgets) if policy is not None else []
    now = time.time()
    holders = await store.sessions()
    shared = [BudgetUse(b.key, b.per, b.limit, await usage(store, b, now=now)) for b in budgets if b.scope == "all"]
    out: list[SessionView] = []
    for summary in view.sessions():
        mine = [h for h in holders if h.session == summary.session]
        own = [
            BudgetUse(b.key, b.per, b.limit, await usage(store, b, summary.session, now=now))
            for b in budgets
            if b.scope == "session"
        ]
        beat = max((h.heartbeat for h in mine), default=None)
        out.append(SessionView(summary, sorted({h.worker for h in mine}), beat, own, beat is not None and beat > now - stale_s))
    return out, shared
