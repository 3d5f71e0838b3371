"""The embedded backend: one SQLite file (WAL) in the state directory.

Every transaction is ``BEGIN IMMEDIATE``: one writer at a time across the threads and processes of
the machine, so check-and-update sequences are atomic. Statements run on the calling thread (a
local SQLite transaction takes microseconds to milliseconds, as the budgets always did); the shared
SQL awaits them without ever suspending, so the thread lock is never held across a real await.
Durable writes (a send claim, an approval) are fsync'd (``synchronous=FULL``); the rest use
``NORMAL`` (WAL: a power loss may drop the last commits, never corrupt). Beside the database,
``state.sqlite3-flowgen`` holds the exfiltration guard's drop generations (``_flowgen``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ._base import StateStore, StoreUnavailable, Tx
from ._flowgen import FlowGenerations

__all__ = ["SqliteStore"]


class _SqliteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.db.execute(sql, tuple(params)).fetchone()
        return tuple(row) if row is not None else None

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.db.execute(sql, tuple(params)).fetchall()]

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, tuple(params)).rowcount


class SqliteStore(StateStore):
    def __init__(self, path: Path, state_dir: Path | None = None, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.state_dir = state_dir if state_dir is not None else path.parent
        self.timeout_s = timeout_s
        self.name = f"SQLite at {path}"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        # the exfiltration guard's drop generations, shared by every process of this file (_flowgen)
        self._generations = FlowGenerations(path.with_name(path.name + "-flowgen"))

    def flow_generation(self, session: str) -> int | None:
        return self._generations.read(session)

    def _flow_drop(self, session: str, begin: bool) -> None:
        if begin:
            self._generations.begin(session)
        else:
            self._generations.end(session)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._db = db
        return self._db

    @contextlib.asynccontextmanager
    async def _raw_tx(self, durable: bool = False) -> AsyncIterator[Tx]:
        with self._lock:
            try:
                db = self._conn()
                if durable:
                    db.execute("PRAGMA synchronous=FULL")
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(self.name, str(exc)) from None
            try:
                yield _SqliteTx(db)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            else:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise StoreUnavailable(self.name, str(exc)) from None
            finally:
                if durable:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("PRAGMA synchronous=NORMAL")

    async def _after_schema(self, tx: Tx, version: int) -> None:
        if version == 1:
            await self._import_legacy(tx)

    async def _import_legacy(self, tx: Tx) -> None:
        """The per-file layout before the store: counters and the send ledger, imported once."""
        budgets = self.state_dir / "budgets.sqlite3"
        if budgets.exists():
            for key, window, used in _read(budgets, "SELECT budget, window, used FROM budget_usage"):
                await tx.run(
                    "INSERT INTO budget_usage (budget, win, used) VALUES (?, ?, ?) ON CONFLICT (budget, win) "
                    "DO UPDATE SET used = MAX(budget_usage.used, excluded.used)",
                    (key, window, used),
                )
        ledger = self.state_dir / "email-ledger.sqlite3"
        if ledger.exists():
            rows = _read(ledger, "SELECT key, state, message_id, result, updated, digest FROM sends")
            if not rows:  # a ledger from before the digest column
                rows = [(*r, None) for r in _read(ledger, "SELECT key, state, message_id, result, updated FROM sends")]
            for key, state, message_id, result, updated, digest in rows:
                # 'sending' was a claim whose outcome never got recorded: possibly sent.
                await tx.run(
                    "INSERT INTO sends (key, state, message_id, result, updated, digest, owner) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'imported') ON CONFLICT (key) DO NOTHING",
                    (key, "sent" if state == "sent" else "unknown", message_id, result, updated, digest),
                )

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
        self._generations.close()


def _read(path: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return []
    try:
        return [tuple(r) for r in db.execute(sql).fetchall()]
    except sqlite3.OperationalError:  # no such table / column: nothing to import from this file
        return []
    finally:
        db.close()
