"""Budgets: action counters per time window, persisted in the state directory.

SQLite (WAL) gives atomic check-and-consume across threads and processes, and survives restarts.
A budget's counter is shared by every session of every ``Legs`` (in any process) on the same state
directory unless the budget says ``scope = "session"``: a compromised agent cannot reset a
deployment's cap by starting new sessions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from ._policy import Budget

__all__ = ["BudgetStore"]

_WINDOW_FORMAT = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "month": "%Y-%m"}


def window_of(per: str, now: float) -> str:
    if per == "total":
        return "total"
    return time.strftime(_WINDOW_FORMAT[per], time.gmtime(now))


def counter_key(budget: Budget, session: str) -> str:
    # One row per budget, window and (for per-session budgets) session; JSON keeps any session name unambiguous.
    return budget.key if budget.scope == "all" else f"{budget.key} session={json.dumps(session)}"


class BudgetStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS budget_usage ("
                " budget TEXT NOT NULL, window TEXT NOT NULL, used INTEGER NOT NULL,"
                " PRIMARY KEY (budget, window))"
            )
            self._db = db
        return self._db

    def consume(self, budgets: list[Budget], session: str = "default", now: float | None = None) -> tuple[Budget, int] | None:
        """Count one action of ``session`` against every budget, or none if one is exhausted (returned with its use)."""
        if not budgets:
            return None
        now = time.time() if now is None else now
        keys = [(b, counter_key(b, session), window_of(b.per, now)) for b in budgets]
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for budget, key, window in keys:
                    row = db.execute(
                        "SELECT used FROM budget_usage WHERE budget=? AND window=?", (key, window)
                    ).fetchone()
                    used = row[0] if row else 0
                    if used >= budget.limit:
                        db.execute("ROLLBACK")
                        return budget, used
                for _, key, window in keys:
                    db.execute(
                        "INSERT INTO budget_usage (budget, window, used) VALUES (?, ?, 1)"
                        " ON CONFLICT(budget, window) DO UPDATE SET used = used + 1",
                        (key, window),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return None

    def usage(self, budget: Budget, session: str = "default", now: float | None = None) -> int:
        with self._lock:
            row = self._conn().execute(
                "SELECT used FROM budget_usage WHERE budget=? AND window=?",
                (counter_key(budget, session), window_of(budget.per, time.time() if now is None else now)),
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
