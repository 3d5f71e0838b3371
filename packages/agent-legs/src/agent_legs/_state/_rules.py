"""The standing approval rules and the ledger of decided calls, in the state store (schema v4).

Both used to be a per-state-directory SQLite file (``approval-rules.sqlite3``): two workers with
separate state directories on one PostgreSQL did not see each other's rules, and a decided call id
could be claimed once per worker. Here they are shared by every worker of the store:

* ``standing_rules``: one row per rule (``id`` unique, ``seq`` the order rules were added; the rule
  itself as ``StandingRule`` JSON). ``scope="session"`` rows carry the session and are deleted by
  ``end_session_rules`` (``close_session``); ``scope="always"`` rows stay until revoked.
* ``decided_calls``: primary key ``(session, call_id)``. ``claim_decision`` is one
  ``INSERT ... ON CONFLICT DO NOTHING`` in a durable transaction: of any number of processes
  claiming the same call, exactly one inserts (the decision runs once); the others read the
  earlier decision.

Threat model: the model never reaches these tables (no action writes them; values are parameters).
A store that cannot be reached raises ``StoreUnavailable``: the caller fails closed (a call whose
standing-rule lookup or claim cannot be made does not run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Tx

__all__ = ["ApprovalRulesMixin", "schema_v4"]


def schema_v4(real: str, serial: str) -> list[str]:
    return [
        (
            f"CREATE TABLE IF NOT EXISTS standing_rules (seq {serial}, id TEXT NOT NULL UNIQUE, action TEXT NOT NULL, "
            f"scope TEXT NOT NULL, session TEXT, rule TEXT NOT NULL, created {real} NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS standing_rules_session ON standing_rules (session)",
        (
            "CREATE TABLE IF NOT EXISTS decided_calls (session TEXT NOT NULL, call_id TEXT NOT NULL, "
            "decision TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (session, call_id))"
        ),
    ]


_INSERT_RULE = (
    "INSERT INTO standing_rules (id, action, scope, session, rule, created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_INSERT_DECIDED = (
    "INSERT INTO decided_calls (session, call_id, decision, created) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (session, call_id) DO NOTHING"
)


class ApprovalRulesMixin:
    """``StateStore``'s standing rules and decided-call ledger (rules as ``StandingRule`` JSON)."""

    def _tx(self, durable: bool = False) -> AbstractAsyncContextManager[Tx]:  # pragma: no cover - StateStore's
        raise NotImplementedError

    async def add_standing_rule(self, rule_id: str, action: str, scope: str, session: str | None, rule_json: str) -> None:
        async with self._tx(durable=True) as tx:
            await tx.run(_INSERT_RULE, (rule_id, action, scope, session, rule_json, time.time()))

    async def standing_rules(self, session: str | None = None, action: str | None = None) -> list[str]:
        """The rules' JSON, oldest first (``session``: the ``always`` rules and that session's)."""
        sql, params = "SELECT rule FROM standing_rules WHERE 1=1", []
        if session is not None:
            sql, params = sql + " AND (scope='always' OR session=?)", [session]
        if action is not None:
            sql, params = sql + " AND action=?", [*params, action]
        async with self._tx() as tx:
            rows = await tx.all(sql + " ORDER BY seq", params)
        return [str(r[0]) for r in rows]

    async def revoke_standing_rule(self, rule_id: str) -> bool:
        async with self._tx(durable=True) as tx:
            return await tx.run("DELETE FROM standing_rules WHERE id=?", (rule_id,)) > 0

    async def end_session_rules(self, session: str) -> int:
        async with self._tx(durable=True) as tx:
            return await tx.run("DELETE FROM standing_rules WHERE scope='session' AND session=?", (session,))

    async def claim_decision(self, session: str, call_id: str, decision: dict[str, Any], created: str) -> dict[str, Any] | None:
        """Record ``decision`` as the one decision of ``(session, call_id)``: ``None`` when this claim
        is the first, else the earlier decision (its ``created`` included): the call must not run."""
        async with self._tx(durable=True) as tx:
            if await tx.run(_INSERT_DECIDED, (session, call_id, json.dumps(decision), created)):
                return None
            row = await tx.one("SELECT decision, created FROM decided_calls WHERE session=? AND call_id=?", (session, call_id))
        earlier: dict[str, Any] = json.loads(row[0]) if row else {}
        earlier["created"] = row[1] if row else None
        return earlier

    async def import_approval_rules(
        self, rules: Iterable[tuple[str, str, str, str | None, str]], decided: Iterable[tuple[str, str, str, str]]
    ) -> tuple[int, int]:
        """Import an older ``approval-rules.sqlite3`` (rules ``(id, action, scope, session, json)``,
        decided calls ``(session, call_id, decision, created)``) in one transaction; rows already
        present are kept. Returns how many of each were new."""
        n_rules = n_decided = 0
        async with self._tx(durable=True) as tx:
            for rule_id, action, scope, session, rule_json in rules:
                n_rules += await tx.run(_INSERT_RULE, (rule_id, action, scope, session, rule_json, time.time()))
            for row in decided:
                n_decided += await tx.run(_INSERT_DECIDED, row)
        return n_rules, n_decided
