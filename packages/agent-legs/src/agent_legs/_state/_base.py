"""The store interface and the SQL both backends share (``?`` placeholders; PostgreSQL gets ``%s``).

Every read-modify-write runs in one transaction that holds the rows it changes: ``BEGIN IMMEDIATE``
on SQLite (one writer at a time), ``SELECT ... FOR UPDATE`` on PostgreSQL (rows locked in a fixed
order, so two workers never deadlock). Values are always parameters, never spliced into SQL.
"""

# S608: the only text spliced into SQL is this module's constants (column lists, FOR_UPDATE, types);
# every value is a parameter.
# ruff: noqa: S608
from __future__ import annotations

import abc
import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .._errors import ActionError, AgentLegsError
from ._flowindex import FlowIndexMixin, schema_v3, schema_v5
from ._rules import ApprovalRulesMixin, schema_v4

__all__ = [
    "SCHEMA_VERSION",
    "ApprovalError",
    "ApprovalRow",
    "SendEntry",
    "SessionHolder",
    "StateStore",
    "StoreUnavailable",
    "Tx",
]


class StoreUnavailable(ActionError):
    """The state database cannot be reached: the action did nothing; retry later."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(
            "unavailable",
            f"the state store ({store}) is unavailable: {reason}; nothing was done",
            retryable=True,
            hint="The deployment's state database is down or unreachable: nothing was done, so a retry later "
            "is safe. If it persists, tell the user.",
        )


class ApprovalError(AgentLegsError):
    """An approval id that is unknown, already decided or expired (a decision is taken once)."""


@dataclass(frozen=True)
class SendEntry:
    key: str
    state: str  # claimed | sent | unknown
    message_id: str
    result: dict[str, Any] | None
    updated: float
    digest: str | None


@dataclass(frozen=True)
class ApprovalRow:
    id: str
    action: str
    tool_name: str
    arguments: dict[str, Any]
    session: str
    reason: str
    call_id: str | None
    created: float
    expires: float
    state: str  # pending | approved | rejected | expired
    decided: float | None
    by: str | None
    message: str | None
    args: dict[str, Any] | None = None  # an ``edited`` decision: the replacement arguments
    remember: str | None = None  # ``"session"``: the decision adds a standing rule for the session

    def public(self) -> dict[str, Any]:
        """The JSON form ``agent-legs approvals --json`` prints."""
        return {
            "id": self.id,
            "action": self.action,
            "arguments": self.arguments,
            "session": self.session,
            "reason": self.reason,
            "created": _iso(self.created),
            "expires": _iso(self.expires),
            "call_id": self.call_id,
            "state": self.state,
        }


@dataclass(frozen=True)
class SessionHolder:
    session: str
    resource: str
    worker: str
    registered: float
    heartbeat: float


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Tx(Protocol):
    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...


SCHEMA_VERSION = 5

_APPROVAL_COLUMNS = (
    "id, action, tool_name, arguments, session, reason, call_id, created, expires, state, decided, decided_by, message, detail"
)


def _schema_v1(real: str, serial: str) -> list[str]:
    return [
        (
            "CREATE TABLE IF NOT EXISTS budget_usage (budget TEXT NOT NULL, win TEXT NOT NULL, used BIGINT NOT NULL, "
            "PRIMARY KEY (budget, win))"
        ),
        (
            f"CREATE TABLE IF NOT EXISTS sends (key TEXT PRIMARY KEY, state TEXT NOT NULL, message_id TEXT NOT NULL, "
            f"result TEXT, updated {real} NOT NULL, digest TEXT, owner TEXT)"
        ),
        (
            f"CREATE TABLE IF NOT EXISTS approvals (id TEXT PRIMARY KEY, action TEXT NOT NULL, tool_name TEXT NOT NULL, "
            f"arguments TEXT NOT NULL, session TEXT NOT NULL, reason TEXT NOT NULL, call_id TEXT, created {real} NOT NULL, "
            f"expires {real} NOT NULL, state TEXT NOT NULL, decided {real}, decided_by TEXT, message TEXT)"
        ),
        "CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, expires)",
        (
            f"CREATE TABLE IF NOT EXISTS session_labels (id {serial}, session TEXT NOT NULL, call_id TEXT, "
            f"label TEXT NOT NULL, piece TEXT NOT NULL, created {real} NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS session_labels_session ON session_labels (session)",
        (
            f"CREATE TABLE IF NOT EXISTS session_registry (session TEXT NOT NULL, resource TEXT NOT NULL, "
            f"worker TEXT NOT NULL, registered {real} NOT NULL, heartbeat {real} NOT NULL, PRIMARY KEY (session, resource))"
        ),
    ]


class StateStore(FlowIndexMixin, ApprovalRulesMixin, abc.ABC):
    """One deployment's shared state. Bound to the event loop that first uses it."""

    #: ``" FOR UPDATE"`` where the backend locks rows (PostgreSQL); SQLite's transactions lock the database.
    FOR_UPDATE = ""
    REAL = "REAL"
    SERIAL = "INTEGER PRIMARY KEY AUTOINCREMENT"
    name: str

    def __init__(self) -> None:
        self._schema_ready = False
        self._schema_lock: asyncio.Lock | None = None

    # -- backend hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _raw_tx(self, durable: bool = False) -> AbstractAsyncContextManager[Tx]:
        """A transaction; ``durable``: committed to stable storage before it returns."""

    async def _lock_schema(self, tx: Tx) -> None:
        """Serialize concurrent migrators (SQLite: ``BEGIN IMMEDIATE`` already does)."""

    async def _after_schema(self, tx: Tx, version: int) -> None:
        """Backend-specific data moves of a migration (SQLite: the older per-file layout)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. Must not raise."""

    # -- schema ----------------------------------------------------------------------------------
    def _migrations(self) -> dict[int, list[str]]:
        # v2: an approval decision's detail (an edit's arguments, "remember"), as JSON; v3: the flow index;
        # v4: standing approval rules and the decided-call ledger (_rules); v5: the flow index's new
        # fingerprints (_flowindex: the old private rows become 'unindexed', fail closed)
        return {
            1: _schema_v1(self.REAL, self.SERIAL),
            2: ["ALTER TABLE approvals ADD COLUMN detail TEXT"],
            3: schema_v3(self.REAL, self.SERIAL),
            4: schema_v4(self.REAL, self.SERIAL),
            5: schema_v5(),
        }

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        if self._schema_lock is None:
            self._schema_lock = asyncio.Lock()
        async with self._schema_lock:
            if self._schema_ready:
                return
            async with self._raw_tx(durable=True) as tx:
                await self._lock_schema(tx)
                await tx.run(
                    f"CREATE TABLE IF NOT EXISTS agent_legs_schema (version INTEGER NOT NULL, applied {self.REAL} NOT NULL)"
                )
                row = await tx.one("SELECT MAX(version) FROM agent_legs_schema")
                current = int(row[0]) if row and row[0] is not None else 0
                for version, statements in sorted(self._migrations().items()):
                    if version <= current:
                        continue
                    for sql in statements:
                        await tx.run(sql)
                    await self._after_schema(tx, version)
                    await tx.run("INSERT INTO agent_legs_schema (version, applied) VALUES (?, ?)", (version, time.time()))
            self._schema_ready = True

    def _tx(self, durable: bool = False) -> AbstractAsyncContextManager[Tx]:
        return _Ready(self, durable)

    async def schema_version(self) -> int:
        async with self._tx() as tx:
            row = await tx.one("SELECT MAX(version) FROM agent_legs_schema")
        return int(row[0]) if row and row[0] is not None else 0

    # -- budgets ---------------------------------------------------------------------------------
    async def consume_budget(self, counters: Sequence[tuple[str, str, int]]) -> tuple[int, int] | None:
        """Count one call against every ``(key, window, limit)``, or against none if one is used up.

        Returns ``(index, used)`` of the first exhausted counter, else ``None``. Rows are created and
        locked in sorted order (no deadlock between workers), checked, then all incremented.
        """
        if not counters:
            return None
        rows = sorted({(k, w) for k, w, _ in counters})
        async with self._tx() as tx:
            for key, window in rows:
                await tx.run(
                    "INSERT INTO budget_usage (budget, win, used) VALUES (?, ?, 0) ON CONFLICT (budget, win) DO NOTHING",
                    (key, window),
                )
            used: dict[tuple[str, str], int] = {}
            for key, window in rows:
                row = await tx.one("SELECT used FROM budget_usage WHERE budget=? AND win=?" + self.FOR_UPDATE, (key, window))
                used[(key, window)] = int(row[0]) if row else 0
            for i, (key, window, limit) in enumerate(counters):
                if used[(key, window)] >= limit:
                    return i, used[(key, window)]
            for key, window, _ in counters:
                await tx.run("UPDATE budget_usage SET used = used + 1 WHERE budget=? AND win=?", (key, window))
        return None

    async def budget_usage(self, key: str, window: str) -> int:
        async with self._tx() as tx:
            row = await tx.one("SELECT used FROM budget_usage WHERE budget=? AND win=?", (key, window))
        return int(row[0]) if row else 0

    # -- the email send ledger -------------------------------------------------------------------
    async def claim_send(
        self, key: str, digest: str, message_id: str, window_s: float | None, owner: str = "", now: float | None = None
    ) -> tuple[str | None, SendEntry | None]:
        """Claim ``key`` for one send (returns its Message-ID), or return the entry that holds it.

        Atomic: of two workers racing for a key, one claims it, the other gets the claim as the
        earlier entry. An entry older than ``window_s`` (content keys) is claimed anew with a new
        Message-ID; ``None``: entries never expire (call ids). Committed durably before it returns.
        """
        now = time.time() if now is None else now
        async with self._tx(durable=True) as tx:
            claimed = await tx.run(
                "INSERT INTO sends (key, state, message_id, result, updated, digest, owner) "
                "VALUES (?, 'claimed', ?, NULL, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, message_id, now, digest, owner),
            )
            if claimed == 1:
                return message_id, None
            row = await tx.one(
                "SELECT state, message_id, result, updated, digest FROM sends WHERE key=?" + self.FOR_UPDATE, (key,)
            )
            if row is None:  # released between the two statements: take it now (we hold the lock)
                await tx.run(
                    "INSERT INTO sends (key, state, message_id, result, updated, digest, owner) "
                    "VALUES (?, 'claimed', ?, NULL, ?, ?, ?)",
                    (key, message_id, now, digest, owner),
                )
                return message_id, None
            entry = SendEntry(key, row[0], row[1], json.loads(row[2]) if row[2] else None, float(row[3]), row[4])
            if window_s is None or now - entry.updated < window_s:
                return None, entry
            # An old identical message: a new send, with a new Message-ID.
            fresh = message_id.replace("@", f".{int(now)}@", 1)
            await tx.run(
                "UPDATE sends SET state='claimed', message_id=?, result=NULL, updated=?, digest=?, owner=? WHERE key=?",
                (fresh, now, digest, owner, key),
            )
            return fresh, None

    async def mark_sent(self, key: str, message_id: str, result: dict[str, Any]) -> None:
        async with self._tx() as tx:
            await tx.run(
                "UPDATE sends SET state='sent', result=?, updated=? WHERE key=? AND message_id=?",
                (json.dumps(result), time.time(), key, message_id),
            )

    async def mark_unknown(self, key: str, message_id: str) -> None:
        """The content went out and no answer came: possibly sent (never sent again under this key)."""
        async with self._tx() as tx:
            await tx.run(
                "UPDATE sends SET state='unknown', updated=? WHERE key=? AND message_id=? AND state='claimed'",
                (time.time(), key, message_id),
            )

    async def release_send(self, key: str, message_id: str) -> None:
        """Nothing reached the server: drop the claim so a later call may send."""
        async with self._tx() as tx:
            await tx.run("DELETE FROM sends WHERE key=? AND message_id=? AND state='claimed'", (key, message_id))

    async def send_entry(self, key: str) -> SendEntry | None:
        async with self._tx() as tx:
            row = await tx.one("SELECT state, message_id, result, updated, digest FROM sends WHERE key=?", (key,))
        if row is None:
            return None
        return SendEntry(key, row[0], row[1], json.loads(row[2]) if row[2] else None, float(row[3]), row[4])

    # -- approvals -------------------------------------------------------------------------------
    async def enqueue_approval(
        self,
        *,
        action: str,
        tool_name: str,
        arguments: dict[str, Any],
        session: str,
        reason: str,
        call_id: str | None,
        timeout_s: float,
        now: float | None = None,
    ) -> ApprovalRow:
        now = time.time() if now is None else now
        approval_id = secrets.token_hex(6)
        async with self._tx(durable=True) as tx:
            await tx.run(
                f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', NULL, NULL, NULL, NULL)",
                (approval_id, action, tool_name, json.dumps(arguments), session, reason, call_id, now, now + timeout_s),
            )
        return ApprovalRow(
            approval_id, action, tool_name, arguments, session, reason, call_id, now, now + timeout_s, "pending", None, None, None
        )

    async def approval(self, approval_id: str) -> ApprovalRow | None:
        async with self._tx() as tx:
            row = await tx.one(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id=?", (approval_id,))
        return _approval(row) if row else None

    async def pending_approvals(self, now: float | None = None) -> list[ApprovalRow]:
        """Requests still waiting (not decided, not past their expiry), oldest first."""
        now = time.time() if now is None else now
        async with self._tx() as tx:
            rows = await tx.all(
                f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE state='pending' AND expires > ? ORDER BY created, id", (now,)
            )
        return [_approval(r) for r in rows]

    async def decide_approval(
        self,
        approval_id: str,
        decision: str,
        *,
        by: str | None = None,
        message: str | None = None,
        args: dict[str, Any] | None = None,
        remember: str | None = None,
        now: float | None = None,
    ) -> ApprovalRow:
        """Approve, edit (``args``: the replacement arguments, which the waiting call validates and
        checks against the policy again) or reject a pending request, exactly once; ``remember``
        (``"session"``/``"always"``, with approve or edit) adds a standing rule when the call runs.
        ``ApprovalError`` for an unknown id, one already decided, or one that expired."""
        if decision not in ("approved", "edited", "rejected"):
            raise ValueError(f"decision must be 'approved', 'edited' or 'rejected', not {decision!r}")
        if (decision == "edited") != (args is not None):
            raise ValueError("an 'edited' decision needs args (the replacement arguments), and only it has them")
        if remember not in (None, "session", "always") or (remember is not None and decision == "rejected"):
            raise ValueError(f"remember must be 'session' or 'always' with an approval, not {remember!r}")
        detail = json.dumps({"args": args, "remember": remember}) if args is not None or remember is not None else None
        now = time.time() if now is None else now
        async with self._tx(durable=True) as tx:
            row = await tx.one(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id=?" + self.FOR_UPDATE, (approval_id,))
            current = _approval(row) if row else None
            if current is not None and current.state == "pending" and current.expires > now:
                await tx.run(
                    "UPDATE approvals SET state=?, decided=?, decided_by=?, message=?, detail=? WHERE id=? AND state='pending'",
                    (decision, now, by, message, detail, approval_id),
                )
                return ApprovalRow(
                    **{
                        **current.__dict__,
                        "state": decision,
                        "decided": now,
                        "by": by,
                        "message": message,
                        "args": args,
                        "remember": remember,
                    }
                )
            if current is not None and current.state == "pending":
                await tx.run("UPDATE approvals SET state='expired', decided=? WHERE id=? AND state='pending'", (now, approval_id))
        if current is None:
            raise ApprovalError(f"no approval request with id {approval_id!r} (list them: agent-legs approvals)")
        if current.state == "pending":
            raise ApprovalError(
                f"approval request {approval_id} expired at {_iso(current.expires)} "
                "(policy.approval_timeout_s): the call was already refused; nothing to decide"
            )
        who = f" by {current.by}" if current.by else ""
        when = f" at {_iso(current.decided)}" if current.decided else ""
        raise ApprovalError(f"approval request {approval_id} was already {current.state}{who}{when}: a decision is taken once")

    async def expire_approval(self, approval_id: str, now: float | None = None) -> ApprovalRow | None:
        """Mark a still-pending request expired; returns the final row (a decision that came first wins)."""
        now = time.time() if now is None else now
        async with self._tx(durable=True) as tx:
            await tx.run("UPDATE approvals SET state='expired', decided=? WHERE id=? AND state='pending'", (now, approval_id))
            row = await tx.one(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id=?", (approval_id,))
        return _approval(row) if row else None

    # -- session labels (for the exfiltration guard) ----------------------------------------------
    async def put_label(self, session: str, call_id: str | None, label: str, piece: Any) -> None:
        """Record a labelled piece of what ``session`` has seen (``piece``: JSON-serialisable)."""
        async with self._tx() as tx:
            await tx.run(
                "INSERT INTO session_labels (session, call_id, label, piece, created) VALUES (?, ?, ?, ?, ?)",
                (session, call_id, label, json.dumps(piece), time.time()),
            )

    async def labels(self, session: str, label: str | None = None) -> list[dict[str, Any]]:
        """The pieces recorded for ``session`` (optionally one label), oldest first."""
        sql = "SELECT call_id, label, piece, created FROM session_labels WHERE session=?"
        params: tuple[Any, ...] = (session,)
        if label is not None:
            sql, params = sql + " AND label=?", (session, label)
        async with self._tx() as tx:
            rows = await tx.all(sql + " ORDER BY id", params)
        return [{"call_id": r[0], "label": r[1], "piece": json.loads(r[2]), "created": float(r[3])} for r in rows]

    async def drop_labels(self, session: str) -> int:
        async with self._tx() as tx:
            return await tx.run("DELETE FROM session_labels WHERE session=?", (session,))

    # -- the session registry --------------------------------------------------------------------
    async def register_session(
        self, session: str, worker: str, resource: str = "session", stale_s: float = 120.0, now: float | None = None
    ) -> SessionHolder:
        """Claim ``session``'s ``resource`` for ``worker``; returns the holder.

        The holder is ``worker`` unless another worker holds it and heartbeat within ``stale_s``
        (then that worker is returned: the caller must route the session there or report it).
        """
        now = time.time() if now is None else now
        async with self._tx() as tx:
            await tx.run(
                "INSERT INTO session_registry (session, resource, worker, registered, heartbeat) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session, resource) DO NOTHING",
                (session, resource, worker, now, now),
            )
            row = await tx.one(
                "SELECT worker, registered, heartbeat FROM session_registry WHERE session=? AND resource=?" + self.FOR_UPDATE,
                (session, resource),
            )
            assert row is not None
            holder, registered, beat = row[0], float(row[1]), float(row[2])
            if holder == worker or beat < now - stale_s:
                if holder != worker:
                    registered = now
                await tx.run(
                    "UPDATE session_registry SET worker=?, registered=?, heartbeat=? WHERE session=? AND resource=?",
                    (worker, registered, now, session, resource),
                )
                return SessionHolder(session, resource, worker, registered, now)
        return SessionHolder(session, resource, holder, registered, beat)

    async def heartbeat(self, worker: str, now: float | None = None) -> int:
        """Refresh every registration of ``worker``; returns how many it holds."""
        async with self._tx() as tx:
            return await tx.run(
                "UPDATE session_registry SET heartbeat=? WHERE worker=?", (time.time() if now is None else now, worker)
            )

    async def release_session(self, session: str, worker: str, resource: str | None = None) -> int:
        """Drop ``worker``'s registrations of ``session`` (all resources, or one)."""
        sql = "DELETE FROM session_registry WHERE session=? AND worker=?"
        params: tuple[str, ...] = (session, worker)
        if resource is not None:
            sql, params = sql + " AND resource=?", (session, worker, resource)
        async with self._tx() as tx:
            return await tx.run(sql, params)

    async def release_worker(self, worker: str) -> int:
        """Drop every registration of ``worker`` (it is shutting down)."""
        async with self._tx() as tx:
            return await tx.run("DELETE FROM session_registry WHERE worker=?", (worker,))

    async def sessions(self, worker: str | None = None) -> list[SessionHolder]:
        sql = "SELECT session, resource, worker, registered, heartbeat FROM session_registry"
        params: tuple[str, ...] = ()
        if worker is not None:
            sql, params = sql + " WHERE worker=?", (worker,)
        async with self._tx() as tx:
            rows = await tx.all(sql + " ORDER BY session, resource", params)
        return [SessionHolder(r[0], r[1], r[2], float(r[3]), float(r[4])) for r in rows]


def _approval(row: tuple[Any, ...]) -> ApprovalRow:
    return ApprovalRow(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]),
        row[4],
        row[5],
        row[6],
        float(row[7]),
        float(row[8]),
        row[9],
        float(row[10]) if row[10] is not None else None,
        row[11],
        row[12],
        *_detail(row[13]),
    )


def _detail(text: str | None) -> tuple[dict[str, Any] | None, str | None]:
    detail = json.loads(text) if text else {}
    return detail.get("args"), detail.get("remember")


class _Ready:
    """``store._tx()``: the schema first (once), then a transaction."""

    def __init__(self, store: StateStore, durable: bool) -> None:
        self.store, self.durable = store, durable
        self._cm: AbstractAsyncContextManager[Tx] | None = None

    async def __aenter__(self) -> Tx:
        await self.store._ensure_schema()
        self._cm = self.store._raw_tx(self.durable)
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._cm is not None
        return await self._cm.__aexit__(*exc)
