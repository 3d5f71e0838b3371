"""The exfiltration guard's index in the state store (``agent_legs._flows``): schema v3 and v5.

* ``flow_index``: one row per reading call of a session: its label (``private``, ``untrusted``,
  ``saturated``, ``unindexed``) and, for private text, the sorted set of its window fingerprints
  (8 bytes each, base64; never the text). ``flow_key``: the deployment's fingerprint key, made once.
* v5 changed how fingerprints are computed (keyed multiply-shift hashing in place of one BLAKE2b per
  window: ``agent_legs._flows._encodings``). A stored fingerprint cannot be recomputed (the text is
  not kept), so the migration turns every ``private`` row into an ``unindexed`` one: the guard treats
  such a session like a saturated one (every sink of its text to an untrusted destination is asked or
  refused; fail closed), and sessions opened after the upgrade are indexed as before.
* Drop generations (``_flowgen``, SQLite only): ``drop_flow_entries`` marks the session's word before
  its ``DELETE`` and after its commit, so a worker can tell without a round trip that the rows it
  cached are still there (``flow_generation``).

Invariants: a private row is durable before the read's result reaches the model (a crash cannot lose
what was read); rows are only ever dropped for a whole session (``close_session``).
Threat model: the model never reaches these tables; every value is a parameter.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import Tx

__all__ = ["FlowIndexMixin", "schema_v3", "schema_v5"]

FlowRow = tuple[int, str | None, str, str, str, int]

_INSERT = "INSERT INTO flow_index (session, call_id, action, label, fps, n, created) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
# Rows per INSERT statement: 7 parameters each, under the 999 of SQLite builds before 3.32.
_ROWS_PER_STATEMENT = 128


def schema_v3(real: str, serial: str) -> list[str]:
    """The guard's index: per session and reading call, the keyed fingerprints of what it read (never
    the text), and the deployment's fingerprint key."""
    return [
        (
            f"CREATE TABLE IF NOT EXISTS flow_index (id {serial}, session TEXT NOT NULL, call_id TEXT, action TEXT NOT NULL, "
            f"label TEXT NOT NULL, fps TEXT NOT NULL, n BIGINT NOT NULL, created {real} NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS flow_index_session ON flow_index (session, id)",
        "CREATE TABLE IF NOT EXISTS flow_key (id INTEGER PRIMARY KEY, k TEXT NOT NULL)",
    ]


def schema_v5() -> list[str]:
    """Fingerprints of the old function match nothing the new one makes: the rows become ``unindexed``."""
    return ["UPDATE flow_index SET label='unindexed', fps='', n=0 WHERE label='private'"]


class FlowIndexMixin:
    """``StateStore``'s flow index."""

    def _tx(self, durable: bool = False) -> AbstractAsyncContextManager[Tx]:  # pragma: no cover - StateStore's
        raise NotImplementedError

    def flow_generation(self, session: str) -> int | None:
        """A number that changes as soon as a drop of ``session``'s rows begins, read without a round trip;
        ``None`` when a drop is in progress or the backend has none (then ask the store). Read it *before*
        reading the rows it vouches for."""
        return None

    def _flow_drop(self, session: str, begin: bool) -> None:
        """Mark the start (``begin``) or the end of a drop of ``session``'s rows (backends with generations)."""

    async def flow_key(self) -> str:
        """The deployment's fingerprint key (hex), created once by whichever worker asks first."""
        async with self._tx(durable=True) as tx:
            await tx.run("INSERT INTO flow_key (id, k) VALUES (1, ?) ON CONFLICT (id) DO NOTHING", (secrets.token_hex(16),))
            row = await tx.one("SELECT k FROM flow_key WHERE id=1")
        assert row is not None
        return str(row[0])

    async def add_flow_entry(self, session: str, call_id: str | None, action: str, label: str, fps: str, n: int) -> None:
        """Record what one call of ``session`` read: ``label`` and its fingerprints (``fps``, encoded)."""
        await self.add_flow_entries([(session, call_id, action, label, fps, n)])

    async def add_flow_entries(self, rows: Sequence[tuple[str, str | None, str, str, str, int]]) -> None:
        """``(session, call_id, action, label, fps, n)`` rows in one transaction (a batch: one commit), in
        their order, by one multi-row ``INSERT`` per ``_ROWS_PER_STATEMENT`` rows: a statement per row cost
        the runtime thread ~6 us each, and gave the GIL away and back around each (issue 20).

        Durable, but for ``untrusted`` labels (shown to approvers, deciding nothing): a private row lost
        to a crash would be private data the guard no longer knows was read."""
        now = time.time()
        async with self._tx(durable=any(row[3] != "untrusted" for row in rows)) as tx:
            for at in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[at : at + _ROWS_PER_STATEMENT]
                values = [value for row in chunk for value in (*row, now)]
                await tx.run(_INSERT + ", ".join([_ROW] * len(chunk)), values)

    async def flow_entries(self, session: str, after: int = 0) -> tuple[int, list[FlowRow]]:
        """The id of ``session``'s oldest entry (0: none; a reader that saw another knows its rows were dropped
        since) and ``(id, call_id, action, label, fps, n)`` of its entries with an id above ``after``."""
        async with self._tx() as tx:
            first = await tx.one("SELECT MIN(id) FROM flow_index WHERE session=?", (session,))
            rows = await tx.all(
                "SELECT id, call_id, action, label, fps, n FROM flow_index WHERE session=? AND id>? ORDER BY id",
                (session, after),
            )
        return int(first[0] or 0) if first else 0, [(int(r[0]), r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    async def drop_flow_entries(self, session: str) -> int:
        """Drop ``session``'s rows (it was closed), its drop generation marked around the ``DELETE``."""
        self._flow_drop(session, begin=True)
        try:
            async with self._tx() as tx:
                return await tx.run("DELETE FROM flow_index WHERE session=?", (session,))
        finally:
            self._flow_drop(session, begin=False)
