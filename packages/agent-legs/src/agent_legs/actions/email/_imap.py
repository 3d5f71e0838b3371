"""IMAP for ``email.list`` and ``email.read``: the standard library's ``imaplib`` in a worker thread.

imaplib rather than aioimaplib: it is the most widely deployed Python IMAP client (literals, STARTTLS,
odd server replies). It blocks, so a session (``run_imap``) runs in a worker thread, and a cancelled
call shuts the thread's socket down (``_Abort``), so the work really stops.

Invariants:

* ``settings.email.imap.timeout_s`` bounds the whole session (connect, TLS, login, select, search,
  fetch), not each socket operation, and the session ends before the runtime's deadline
  (``_servers.exchange_deadline``); at the deadline the socket is shut, the call reports ``timeout``;
* nothing is changed on the server: folders are selected read-only and bodies fetched with
  ``BODY.PEEK`` (reading does not mark a message seen);
* a fetch is bounded (``BODY.PEEK[]<0.cap>``), so a giant message cannot exhaust memory;
* the session is logged out (and the socket closed) whatever happens.

Threat model: the model chooses the folder, the query and the message id. A folder name with a
control character is refused, the rest is encoded (modified UTF-7) and quoted; search values are
quoted or sent as literals; a message id must be digits. None of them can inject an IMAP command.
The server and what it returns are untrusted: replies are parsed defensively, never evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import imaplib
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..._context import ActionContext
from ..._errors import ActionError
from ..._telemetry._semconv import AGENT_LEGS_EMAIL_OPERATION, ERROR_TYPE, SERVER_ADDRESS, SERVER_PORT
from . import _servers
from ._addresses import CONTROL
from ._mime import decode_header
from ._models import ListInput
from ._query import QUERY_SYNTAX, search_criteria
from ._settings import MailServer
from ._utf7 import utf7_decode, utf7_encode

__all__ = ["imap_fetch", "imap_list", "run_imap"]

T = TypeVar("T")


class _Abort:
    """Lets the event loop stop a blocking imaplib call in a worker thread.

    It keeps a duplicate of the connection's socket: ``shutdown`` acts on the socket itself, not
    the descriptor, so it unblocks the worker mid-handshake or mid-read without touching the
    worker's (SSL) socket object.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.aborted = False
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock.dup()
            if self.aborted:
                self._shutdown()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class _IMAP4(imaplib.IMAP4):
    def __init__(self, host: str, port: int, timeout: float, abort: _Abort) -> None:
        self._abort = abort
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:  # imaplib's hook, as in 3.11
        sock = socket.create_connection((self.host, self.port), timeout)
        self._abort.attach(sock)
        return sock


class _IMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, host: str, port: int, timeout: float, abort: _Abort, ssl_context: ssl.SSLContext) -> None:
        self._abort = abort
        self._context = ssl_context
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        self._abort.attach(sock)  # before the TLS handshake, which can hang too
        return self._context.wrap_socket(sock, server_hostname=self.host)


def _connect(server: MailServer, password: str | None, abort: _Abort) -> imaplib.IMAP4:
    port = server.port or {"tls": 993, "starttls": 143, "none": 143}[server.security]
    conn: imaplib.IMAP4
    if server.security == "tls":
        conn = _IMAP4_SSL(server.host, port, server.timeout_s, abort, _servers.tls(server))
    else:
        conn = _IMAP4(server.host, port, server.timeout_s, abort)
        if server.security == "starttls":
            conn.starttls(ssl_context=_servers.tls(server))
    if abort.aborted:
        raise OSError("aborted")
    if server.username:
        try:
            conn.login(server.username, password or "")
        except imaplib.IMAP4.error as exc:
            _logout(conn)
            raise ActionError(
                "failed",
                f"IMAP login failed for user {server.username!r} at {server.host}:{port}: {_imap_text(exc)}",
                retryable=False,
                hint="Check settings.email.imap username and password.",
            ) from None
    return conn


def _logout(conn: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError, ValueError):
        conn.logout()


def _imap_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_imap_text(v) for v in value if v is not None)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _folder(name: str) -> str:
    if not name or CONTROL.search(name):
        raise ActionError("invalid_input", "invalid folder name")
    return _quote(utf7_encode(name))


def _folders(conn: imaplib.IMAP4) -> list[str]:
    status, data = conn.list()
    names: list[str] = []
    for line in (data or []) if status == "OK" else []:
        if not isinstance(line, bytes):
            continue
        m = re.match(rb'\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$', line)
        if not m or b"\\noselect" in m.group("flags").lower():
            continue
        raw = m.group("name").decode(errors="replace")
        if raw.startswith('"') and raw.endswith('"'):
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        names.append(utf7_decode(raw))
    return sorted(names, key=lambda n: (n.upper() != "INBOX", n.lower()))


def _select(conn: imaplib.IMAP4, folder: str) -> int:
    status, data = conn.select(_folder(folder), readonly=True)
    if status != "OK":
        available = _folders(conn)
        raise ActionError(
            "not_found",
            f"folder {folder!r} does not exist",
            hint=f"Folders: {', '.join(available)}" if available else None,
            data={"folders": available},
        )
    try:
        return int(data[0] or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1


def _uid_search(conn: imaplib.IMAP4, criteria: list[tuple[str, str | None]]) -> set[int]:
    """UIDs matching every criterion. imaplib sends one literal per command, so each non-ASCII value
    gets its own SEARCH CHARSET UTF-8 and the results are intersected."""
    plain: list[str] = []
    wide: list[tuple[str, str]] = []
    for key, value in criteria:
        if value is None:
            plain.append(key)
        elif value.isascii():
            plain += [key, value if key.startswith("SENT") else _quote(value)]
        else:
            wide.append((key, value))
    result: set[int] | None = None
    searches: list[tuple[list[str], bytes | None]] = []
    if wide:
        first, rest = wide[0], wide[1:]
        searches.append((["CHARSET", "UTF-8", *plain, first[0]], first[1].encode()))
        searches += [(["CHARSET", "UTF-8", key], value.encode()) for key, value in rest]
    else:
        searches.append((plain or ["ALL"], None))
    for args, literal in searches:
        conn.literal = literal  # type: ignore[assignment]
        status, data = conn.uid("SEARCH", *args)
        if status != "OK":
            raise ActionError("invalid_input", f"the server rejected the search: {_imap_text(data)}", hint=QUERY_SYNTAX)
        found = {int(u) for u in b" ".join(d for d in data if isinstance(d, bytes)).split()}
        result = found if result is None else result & found
    return result or set()


def imap_list(server: MailServer, password: str | None, abort: _Abort, args: ListInput) -> dict[str, Any]:
    """``email.list`` in the worker thread: the folder's matching messages, newest first."""
    conn = _connect(server, password, abort)
    try:
        exists = _select(conn, args.folder)
        criteria = search_criteria(args.query, args.unread_only)
        by_sequence = not criteria and exists >= 0
        if by_sequence:
            # Everything: the newest by sequence number (ascending with UID), without a SEARCH ALL
            # that lists every UID of a big mailbox.
            total = exists
            fetch_set = f"{max(1, exists - args.limit + 1)}:{exists}" if exists else ""
        else:
            uids = _uid_search(conn, criteria)
            total = len(uids)
            fetch_set = ",".join(map(str, sorted(uids, reverse=True)[: args.limit]))
        messages: list[dict[str, Any]] = []
        if fetch_set:
            parts = "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"
            status, data = conn.fetch(fetch_set, parts) if by_sequence else conn.uid("FETCH", fetch_set, parts)
            if status != "OK":
                raise ActionError("failed", f"the server refused to list messages: {_imap_text(data)}", retryable=True)
            for item in data:
                if not isinstance(item, tuple):
                    continue
                meta = item[0].decode(errors="replace")
                uid = re.search(r"UID (\d+)", meta)
                if uid is None:
                    continue
                size = re.search(r"RFC822\.SIZE (\d+)", meta)
                flags = re.search(r"FLAGS \(([^)]*)\)", meta)
                # compat32 + decode_header: the same text as policy.default's header objects, ~10x faster.
                headers = email.message_from_bytes(item[1], policy=email.policy.compat32)
                messages.append(
                    {
                        "id": uid.group(1),
                        "from": decode_header(headers.get("From")),
                        "to": decode_header(headers.get("To")),
                        "subject": decode_header(headers.get("Subject")),
                        "date": decode_header(headers.get("Date")),
                        "seen": "\\Seen" in (flags.group(1) if flags else meta),
                        "size": int(size.group(1)) if size else None,
                    }
                )
            messages.sort(key=lambda m: int(m["id"]), reverse=True)
            messages = messages[: args.limit]
        return {"folder": args.folder, "total": total, "messages": messages}
    finally:
        _logout(conn)


def imap_fetch(server: MailServer, password: str | None, abort: _Abort, folder: str, uid: str, cap: int) -> tuple[bytes, int]:
    """``email.read`` in the worker thread: the message's bytes (at most ``cap``) and its full size."""
    if not uid.isdigit():
        raise ActionError("invalid_input", f"message id must be a number from email_list, got {uid!r}")
    conn = _connect(server, password, abort)
    try:
        _select(conn, folder)
        # One round trip; the partial fetch bounds memory for a giant message.
        _, data = conn.uid("FETCH", uid, f"(RFC822.SIZE BODY.PEEK[]<0.{cap}>)")
        for item in data or []:
            if isinstance(item, tuple):
                size = re.search(rb"RFC822\.SIZE (\d+)", item[0])
                return bytes(item[1]), int(size.group(1)) if size else len(item[1])
        raise ActionError(
            "not_found", f"no message with id {uid} in {folder}", hint="Ids come from email_list for the same folder."
        )
    finally:
        _logout(conn)


def _in_worker(fn: Callable[..., T], server: MailServer, password: str | None, abort: _Abort, *args: Any) -> T:
    try:
        return fn(server, password, abort, *args)
    finally:
        abort.close()


async def run_imap(ctx: ActionContext, operation: str, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(server, password, abort, *args)`` (``imap_list``, ``imap_fetch``) in a worker thread,
    within the session's bound, in an ``imap session`` span; failures become ``ActionError``."""
    started = time.monotonic()
    server = _servers.server(ctx, "imap")
    password = _servers.password(ctx, server, "imap")
    abort = _Abort()
    # settings.email.imap.timeout_s bounds the whole session (connect, TLS, login, select, fetch), not
    # each socket operation, and the session ends before the runtime's deadline.
    budget_s = max(_servers.exchange_deadline(started, ctx.timeout_s, server.timeout_s) - time.monotonic(), 0.001)
    with ctx.tracer.start_as_current_span("imap session") as span:
        span.set_attribute(SERVER_ADDRESS, server.host)
        if server.port:
            span.set_attribute(SERVER_PORT, server.port)
        span.set_attribute(AGENT_LEGS_EMAIL_OPERATION, operation)
        try:
            async with asyncio.timeout(budget_s):
                try:
                    return await asyncio.to_thread(_in_worker, fn, server, password, abort, *args)
                except asyncio.CancelledError:
                    abort.abort()  # the deadline: the worker thread's socket is shut, so it stops now
                    raise
        except TimeoutError:  # the whole session's bound (or a socket operation's, which is no shorter)
            abort.abort()
            span.set_attribute(ERROR_TYPE, "timeout")
            raise ActionError(
                "timeout",
                f"the IMAP server {server.host} did not finish within {budget_s:.3g} s "
                "(settings.email.imap.timeout_s / policy.email.timeout_s)",
                retryable=True,
                hint="The mail server is slow or down: try again later (reading changes nothing).",
            ) from None
        except imaplib.IMAP4.abort as exc:
            raise ActionError("unavailable", f"the IMAP connection to {server.host} broke: {exc}", retryable=True) from None
        except imaplib.IMAP4.error as exc:
            raise ActionError("failed", f"IMAP error from {server.host}: {exc}", retryable=False) from None
        except OSError as exc:
            if _servers.cert_error(exc):
                raise ActionError(
                    "failed",
                    f"the IMAP server's TLS certificate is not trusted: {exc}",
                    hint="Fix the server certificate or set settings.email.imap.ca_file to the CA that issued it.",
                ) from None
            raise ActionError("unavailable", f"cannot reach the IMAP server {server.host}: {exc}", retryable=True) from None
