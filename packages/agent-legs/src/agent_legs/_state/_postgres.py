"""The shared backend: PostgreSQL through psycopg 3's async connection pool.

Every read-modify-write is one transaction holding row locks (``SELECT ... FOR UPDATE``, rows taken
in sorted order) or one ``INSERT ... ON CONFLICT``: exact across every worker on every machine.
Migrations take a transaction-scoped advisory lock, so workers starting together migrate once.

The pool checks a connection before lending it (a database restarted meanwhile leaves dead
connections behind: they are replaced, not handed out). A database that cannot be reached within
``settings.state.timeout_s`` is ``StoreUnavailable`` with libpq's reason (password never shown).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ._base import StateStore, StoreUnavailable, Tx

__all__ = ["PostgresStore"]

log = logging.getLogger("agent_legs")

_MIGRATION_LOCK = 0x6167656E746C6567  # pg_advisory_xact_lock key: "agentleg"


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        cur = await self.conn.execute(sql.replace("?", "%s"), tuple(params))
        row = await cur.fetchone()
        return tuple(row) if row is not None else None

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(sql.replace("?", "%s"), tuple(params))
        return [tuple(r) for r in await cur.fetchall()]

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self.conn.execute(sql.replace("?", "%s"), tuple(params))
        return int(cur.rowcount)


class PostgresStore(StateStore):
    FOR_UPDATE = " FOR UPDATE"
    REAL = "DOUBLE PRECISION"
    SERIAL = "BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str, pool_size: int = 10, timeout_s: float = 5.0) -> None:
        super().__init__()
        from psycopg.conninfo import conninfo_to_dict

        self.url = url
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        info = conninfo_to_dict(url)
        self.name = (
            f"PostgreSQL at {info.get('host') or 'localhost'}:{info.get('port') or 5432}/"
            f"{info.get('dbname') or info.get('user') or ''}"
        )
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            from psycopg_pool import AsyncConnectionPool

            self._pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=max(self.pool_size, 1),
                open=False,
                timeout=self.timeout_s,
                check=AsyncConnectionPool.check_connection,
                name="agent-legs-state",
                kwargs={"autocommit": True, "connect_timeout": max(int(self.timeout_s), 1)},
                reconnect_timeout=max(self.timeout_s * 6, 30.0),
            )
            await self._pool.open(wait=False)
        return self._pool

    @staticmethod
    def _reason(exc: BaseException) -> str:
        """Why the database cannot be reached: libpq's own message, on one line, password-free."""
        from . import redact_url

        text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
        return redact_url(text[:300] or type(exc).__name__)

    @contextlib.asynccontextmanager
    async def _raw_tx(self, durable: bool = False) -> AsyncIterator[Tx]:
        import psycopg
        from psycopg_pool import PoolTimeout

        pool = await self._get_pool()
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    conn = await stack.enter_async_context(pool.connection())
                except PoolTimeout:
                    # After an outage the pool reconnects with back-off; the database may be back already:
                    # one direct connection (closed after this transaction) rather than "unavailable".
                    conn = await stack.enter_async_context(
                        await psycopg.AsyncConnection.connect(
                            self.url, autocommit=True, connect_timeout=max(int(self.timeout_s), 1)
                        )
                    )
                async with conn.transaction():
                    yield _PgTx(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise StoreUnavailable(self.name, self._reason(exc)) from None

    async def _lock_schema(self, tx: Tx) -> None:
        await tx.run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close(timeout=5)
            except Exception:
                log.exception("closing the state store's connection pool failed")
