"""Budgets: action counters per time window, kept in the state store (``agent_legs._state``).

The store makes check-and-consume atomic across threads, processes and (on PostgreSQL) machines,
and keeps counts across restarts. A budget's counter is shared by every session of every ``Legs``
on the same store (state directory, or database) unless the budget says ``scope = "session"``: a
compromised agent cannot reset a deployment's cap by starting new sessions.
"""

from __future__ import annotations

import json
import time

from ._policy import Budget
from ._state import StateStore

__all__ = ["consume", "counter_key", "usage", "window_of"]

_WINDOW_FORMAT = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "month": "%Y-%m"}


def window_of(per: str, now: float) -> str:
    if per == "total":
        return "total"
    return time.strftime(_WINDOW_FORMAT[per], time.gmtime(now))


def counter_key(budget: Budget, session: str) -> str:
    # One row per budget, window and (for per-session budgets) session; JSON keeps any session name unambiguous.
    return budget.key if budget.scope == "all" else f"{budget.key} session={json.dumps(session)}"


async def consume(
    store: StateStore, budgets: list[Budget], session: str = "default", now: float | None = None
) -> tuple[Budget, int] | None:
    """Count one action of ``session`` against every budget, or none if one is exhausted (returned with its use)."""
    if not budgets:
        return None
    now = time.time() if now is None else now
    exhausted = await store.consume_budget([(counter_key(b, session), window_of(b.per, now), b.limit) for b in budgets])
    if exhausted is None:
        return None
    index, used = exhausted
    return budgets[index], used


async def usage(store: StateStore, budget: Budget, session: str = "default", now: float | None = None) -> int:
    return await store.budget_usage(counter_key(budget, session), window_of(budget.per, time.time() if now is None else now))
