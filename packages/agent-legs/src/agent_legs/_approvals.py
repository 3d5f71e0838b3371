"""Standing approval rules and the ledger of decided calls, in the state store (shared by every worker).

Standing rules ("always allow email to bob@example.com in this session") are added by a decision
with ``remember`` and apply to later calls of the same action whose arguments fit the rule's
``match``. ``scope="session"`` rules end with the session (``close_session``) or when revoked;
``scope="always"`` rules stay until revoked. They live in the state store (``_state._rules``), so
every worker sharing the store (the same state directory, or the same PostgreSQL) sees, applies and
revokes the same rules.

The ledger makes a decision given from outside (a LangGraph resume value, a LlamaIndex event) count
once: the first decision for a ``(session, call id)`` claims the call (one atomic insert on the
store's primary key, across processes and machines); any later one (a graph replayed from an older
checkpoint, a repeated answer, a node re-run after a crash, the same answer given to another worker)
is refused, so an approved call never runs twice and a rejected one cannot be approved afterwards.

The older per-state-directory file ``approval-rules.sqlite3`` is imported once on first use (rules
and decided calls kept, rows already in the store left as they are), then renamed
``approval-rules.sqlite3.migrated``.

Fail closed: a store that cannot be reached makes the lookup or the claim raise ``unavailable``
(naming the store); the call does not run, since its decision could not be checked or recorded.

Threat model: the model cannot reach this store (no action writes here; the state directory is
outside the workspace). A standing rule widens nothing the policy denies: ``deny`` and the family
sections (recipients, hosts) still apply to every call a rule lets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._models import ApprovalDecision, StandingRule
from ._policy import ApprovalRule

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["LEGACY_FILE", "ApprovalStore", "rule_fits"]

log = logging.getLogger("agent_legs")

LEGACY_FILE = "approval-rules.sqlite3"


def rule_fits(rule: StandingRule, action: str, arguments: dict[str, Any], session: str) -> bool:
    """Whether ``rule`` covers this call (same matching as policy conditions: globs, every element)."""
    if rule.action != action or (rule.scope == "session" and rule.session != session):
        return False
    if not rule.match:
        return True
    return ApprovalRule(action=action, unless=rule.match).exempts(arguments)


class ApprovalStore:
    """The rules and the ledger of one ``Legs``: every method runs on the runtime loop (the store's
    connections belong to it) and raises ``StoreUnavailable`` when the store cannot be reached."""

    def __init__(self, runtime: Runtime, state_dir: Path) -> None:
        self.runtime = runtime
        self.legacy = state_dir / LEGACY_FILE
        self._imported = False
        self._import_lock: asyncio.Lock | None = None

    async def _ready(self) -> None:
        """Import the older ``approval-rules.sqlite3`` once (before any read or write)."""
        if self._imported:
            return
        if self._import_lock is None:
            self._import_lock = asyncio.Lock()
        async with self._import_lock:
            if self._imported:
                return
            if self.legacy.exists():
                rules, decided = _read_legacy(self.legacy)
                added = await self.runtime.state.import_approval_rules(rules, decided)
                with contextlib.suppress(FileNotFoundError):  # another Legs on this directory renamed it
                    self.legacy.rename(self.legacy.with_name(LEGACY_FILE + ".migrated"))
                log.info("imported %d standing rules and %d decided calls from %s", *added, self.legacy)
            self._imported = True

    # -- standing rules ------------------------------------------------------------------------------
    async def add_rule(
        self, action: str, match: dict[str, list[Any]] | None, scope: str, session: str, by: str | None
    ) -> StandingRule:
        rule = StandingRule(
            id=f"sr-{uuid.uuid4().hex[:12]}",
            action=action,
            match=match,
            scope=scope,  # type: ignore[arg-type]
            session=session if scope == "session" else None,
            by=by,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        await self.runtime.on_loop(self._add(rule))
        return rule

    async def _add(self, rule: StandingRule) -> None:
        await self._ready()
        await self.runtime.state.add_standing_rule(rule.id, rule.action, rule.scope, rule.session, rule.model_dump_json())

    async def rules(self, session: str | None = None, action: str | None = None) -> list[StandingRule]:
        """Every standing rule (``session``: the ``always`` rules and that session's), oldest first."""
        found = await self.runtime.on_loop(self._rules(session, action))
        return [StandingRule.model_validate_json(r) for r in found]

    async def _rules(self, session: str | None, action: str | None) -> list[str]:
        await self._ready()
        return await self.runtime.state.standing_rules(session, action)

    async def find(self, action: str, arguments: dict[str, Any], session: str) -> StandingRule | None:
        for rule in await self.rules(session, action):
            if rule_fits(rule, action, arguments, session):
                return rule
        return None

    async def revoke(self, rule_id: str) -> bool:
        return await self.runtime.on_loop(self._revoke(rule_id))

    async def _revoke(self, rule_id: str) -> bool:
        await self._ready()
        return await self.runtime.state.revoke_standing_rule(rule_id)

    async def end_session(self, session: str) -> None:
        await self.runtime.on_loop(self._end_session(session))

    async def _end_session(self, session: str) -> None:
        await self._ready()
        await self.runtime.state.end_session_rules(session)

    # -- the ledger of decided calls -------------------------------------------------------------------
    async def claim(self, session: str, call_id: str, decision: ApprovalDecision) -> dict[str, Any] | None:
        """Record ``decision`` as the one decision of this call; ``None`` when it is the first, else the
        earlier decision (``type``, ``by``, ``created``): the call must not run (again)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return await self.runtime.on_loop(self._claim(session, call_id, {"type": decision.type, "by": decision.by}, now))

    async def _claim(self, session: str, call_id: str, record: dict[str, Any], now: str) -> dict[str, Any] | None:
        await self._ready()
        return await self.runtime.state.claim_decision(session, call_id, record, now)


def _read_legacy(
    path: Path,
) -> tuple[list[tuple[str, str, str, str | None, str]], list[tuple[str, str, str, str]]]:
    """The rules and decided calls of an older ``approval-rules.sqlite3`` (read-only; a file that is
    not such a database imports nothing)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return [], []
    rules: list[tuple[str, str, str, str | None, str]] = []
    decided: list[tuple[str, str, str, str]] = []
    try:
        with contextlib.suppress(sqlite3.Error):
            for rule_id, text, session, scope in db.execute(
                "SELECT id, rule, session, scope FROM standing_rules ORDER BY rowid"
            ).fetchall():
                try:
                    action = StandingRule.model_validate_json(text).action
                except ValueError:
                    log.warning("%s: standing rule %s is not readable; not imported", path, rule_id)
                    continue
                rules.append((rule_id, action, scope, session, text))
        with contextlib.suppress(sqlite3.Error):
            decided = [tuple(r) for r in db.execute("SELECT session, call_id, decision, created FROM decided_calls")]  # type: ignore[misc]
    finally:
        db.close()
    return rules, decided
