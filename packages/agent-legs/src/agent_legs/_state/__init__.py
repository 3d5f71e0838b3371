"""The state store: everything that must be shared by every worker of a deployment.

Budgets, the email send ledger, the approval queue, standing approval rules and the ledger of
decided calls (``_rules``), session labels and the session registry live here, behind one interface with two backends:

* ``SqliteStore`` (the default): ``state.sqlite3`` in the state directory. WAL, ``BEGIN IMMEDIATE``
  transactions: exact across the threads and processes of one machine sharing the directory.
* ``PostgresStore``: ``settings.state.url = "postgresql://..."`` (psycopg 3, an async pool). Row
  locks (``SELECT ... FOR UPDATE``) and ``INSERT ... ON CONFLICT``: exact across machines.

Invariants (both backends, tested against real SQLite files and a real PostgreSQL):

* a budget counter never lets more calls through than its limit, however many processes race; a
  refused call consumes nothing;
* a send ledger key is claimed by exactly one caller (``claimed`` -> ``sent`` | ``unknown``, or
  the claim is released when nothing reached the server); ``claimed`` and ``unknown`` both mean
  "possibly sent": never sent again under the same key;
* an approval is decided exactly once (the first decision wins; a late one is an error, never a
  second run), and not after it expired; a decision handed in for ``(session, call id)`` is claimed
  by exactly one caller, however many workers race;
* the schema is created and migrated on first use under a lock, recorded in ``agent_legs_schema``;
  the SQLite backend imports the counters and ledger of the older per-file layout
  (``budgets.sqlite3``, ``email-ledger.sqlite3``) once, in the same transaction.

A database that cannot be reached raises ``ActionError("unavailable", ...)`` naming the store and
the reason: the action that needed it does nothing (nothing is sent, nothing is counted), and a
retry once it is back counts and sends exactly as if the outage never happened. The one
conservative exception: a commit whose acknowledgement is lost may have counted a call that was
then reported ``unavailable`` (a budget can be over-counted by the calls caught in an outage, never
under-counted), and a send whose "sent"/"released" could not be recorded stays "possibly sent".

Threat model: the model never reaches the store; it only supplies action arguments, which are
stored redacted (approvals) and compared, never interpreted as SQL (every value is a parameter).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._errors import ConfigError
from ._base import (
    SCHEMA_VERSION,
    ApprovalRow,
    SendEntry,
    SessionHolder,
    StateStore,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .._secrets import Secrets
    from .._settings import Settings

__all__ = [
    "SCHEMA_VERSION",
    "ApprovalRow",
    "SendEntry",
    "SessionHolder",
    "StateStore",
    "StoreUnavailable",
    "open_store",
    "redact_url",
    "worker_id",
]

_WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_id() -> str:
    """This process's name in the session registry: host, pid and a random part (pids are reused)."""
    return _WORKER_ID


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def open_store(state_dir: Path, settings: Settings, secrets: Secrets | None = None) -> StateStore:
    """The store ``settings.state`` names: SQLite in ``state_dir`` (the default) or PostgreSQL.

    Checks the URL (a ``ConfigError`` naming the fix); does not connect: a database that is down at
    start makes the calls that need it ``unavailable``, it does not stop the process from starting.
    """
    url = settings.state.url
    if url is None or not url.strip():
        from ._sqlite import SqliteStore

        return SqliteStore(state_dir / "state.sqlite3", state_dir=state_dir)
    url = url.strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"settings.state.url: {redact_url(url)!r} is not a PostgreSQL URL (scheme {scheme or 'missing'!r}); "
            "use postgresql://USER:PASSWORD@HOST:5432/DBNAME (password as {secret:NAME}), or leave "
            "settings.state.url unset for the embedded SQLite store in the state directory"
        )
    if secrets is not None and "{secret:" in url:
        url = secrets.resolve(url)
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigError(
            "settings.state.url names PostgreSQL, but psycopg is not installed: pip install 'agent-legs[postgres]'"
        ) from None
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
        port = str(info.get("port") or "5432")
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
            raise ValueError(f"port {port!r} is not a port number")
    except Exception as exc:
        raise ConfigError(
            f"settings.state.url: {redact_url(url)!r} is not a valid PostgreSQL URL ({_first_line(exc)}); "
            "the form is postgresql://USER:PASSWORD@HOST:5432/DBNAME"
        ) from None
    from ._postgres import PostgresStore

    return PostgresStore(url, pool_size=settings.state.pool_size, timeout_s=settings.state.timeout_s)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_url(text[0]) if text else type(exc).__name__
