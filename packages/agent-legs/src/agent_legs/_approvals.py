"""Standing approval rules and the ledger of decided calls, persisted in the state directory.

Standing rules ("always allow email to bob@example.com in this session") are added by a decision
with ``remember`` and apply to later calls of the same action whose arguments fit the rule's
``match``. ``scope="session"`` rules end with the session (``close_session``) or when revoked;
``scope="always"`` rules stay until revoked. Both live in SQLite (WAL), so every process on the
state directory sees and revokes the same rules.

The ledger makes a decision given from outside (a LangGraph resume value, a LlamaIndex event) count
once: the first decision for a ``(session, call id)`` claims the call; any later one (a graph replayed
from an older checkpoint, a repeated answer, a node re-run after a crash) is refused, so an approved
call never runs twice and a rejected one cannot be approved afterwards.

Threat model: the model cannot reach this store (no action writes here; the state directory is
outside the workspace). A standing rule widens nothing the policy denies: ``deny`` and the family
sections (recipients, hosts) still apply to every call a rule lets through.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._models import ApprovalDecision, StandingRule
from ._policy import ApprovalRule

__all__ = ["ApprovalStore", "rule_fits"]


def rule_fits(rule: StandingRule, action: str, arguments: dict[str, Any], session: str) -> bool:
    """Whether ``rule`` covers this call (same matching as policy conditions: globs, every element)."""
    if rule.action != action or (rule.scope == "session" and rule.session != session):
        return False
    if not rule.match:
        return True
    return ApprovalRule(action=action, unless=rule.match).exempts(arguments)


class ApprovalStore:
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
                "CREATE TABLE IF NOT EXISTS standing_rules (id TEXT PRIMARY KEY, rule TEXT NOT NULL,"
                " session TEXT, scope TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS decided_calls (session TEXT NOT NULL, call_id TEXT NOT NULL,"
                " decision TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (session, call_id))"
            )
            self._db = db
        return self._db

    # -- standing rules ------------------------------------------------------------------------------
    def add_rule(self, action: str, match: dict[str, list[Any]] | None, scope: str, session: str, by: str | None) -> StandingRule:
        rule = StandingRule(
            id=f"sr-{uuid.uuid4().hex[:12]}",
            action=action,
            match=match,
            scope=scope,  # type: ignore[arg-type]
            session=session if scope == "session" else None,
            by=by,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._lock:
            self._conn().execute(
                "INSERT INTO standing_rules (id, rule, session, scope) VALUES (?, ?, ?, ?)",
                (rule.id, rule.model_dump_json(), rule.session, rule.scope),
            )
        return rule

    def rules(self, session: str | None = None) -> list[StandingRule]:
        """Every standing rule (``session``: the ``always`` rules and that session's)."""
        with self._lock:
            rows = self._conn().execute("SELECT rule FROM standing_rules ORDER BY rowid").fetchall()
        found = [StandingRule.model_validate_json(r[0]) for r in rows]
        return [r for r in found if session is None or r.scope == "always" or r.session == session]

    def find(self, action: str, arguments: dict[str, Any], session: str) -> StandingRule | None:
        for rule in self.rules(session):
            if rule_fits(rule, action, arguments, session):
                return rule
        return None

    def revoke(self, rule_id: str) -> bool:
        with self._lock:
            return self._conn().execute("DELETE FROM standing_rules WHERE id=?", (rule_id,)).rowcount > 0

    def end_session(self, session: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM standing_rules WHERE scope='session' AND session=?", (session,))

    # -- the ledger of decided calls -------------------------------------------------------------------
    def claim(self, session: str, call_id: str, decision: ApprovalDecision) -> dict[str, Any] | None:
        """Record ``decision`` as the one decision of this call; ``None`` when it is the first, else the
        earlier decision (``type``, ``by``, ``created``): the call must not run (again)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        record = json.dumps({"type": decision.type, "by": decision.by})
        with self._lock:
            db = self._conn()
            inserted = db.execute(
                "INSERT OR IGNORE INTO decided_calls (session, call_id, decision, created) VALUES (?, ?, ?, ?)",
                (session, call_id, record, now),
            ).rowcount
            if inserted:
                return None
            row = db.execute(
                "SELECT decision, created FROM decided_calls WHERE session=? AND call_id=?", (session, call_id)
            ).fetchone()
        earlier: dict[str, Any] = json.loads(row[0]) if row else {}
        earlier["created"] = row[1] if row else None
        return earlier

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
