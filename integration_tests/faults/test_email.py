"""Email under faults: SMTP servers that hang at each protocol stage, or are down.

A real SMTP server on 127.0.0.1 (raw asyncio sockets, in a thread of its own) answers normally until
the stage it is told to hang at, and then says nothing more while it reads (and records) whatever
the client sends. Guarantees checked, for every stage:

* stages: before the greeting, after EHLO, after STARTTLS (no reply; or TLS up, then silence), after
  AUTH, after MAIL, after RCPT, after DATA (no 354), after the final dot (no 250);
* the call ends within the configured timeout (``settings.email.smtp.timeout_s`` or
  ``policy.email.timeout_s``, whichever is shorter) plus a small slack, whatever the stage: the
  timeout bounds the whole exchange (connect, STARTTLS, AUTH, every attempt, the back-off);
* a hang before the message content was sent is ``timeout``, ``retryable: true``, nothing sent, the
  ledger entry released: a retry with the same call id sends it, once;
* a hang (or a lost connection) after the content was sent is "delivery unknown": never
  ``retryable``, ``data.possibly_sent``, a hint telling the model not to send again with a new call;
  the ledger keeps the send, so a retry with the same call id does not send it again;
* SMTP down (connection refused) is ``unavailable``, retryable, within the timeout.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent_legs import Legs
from agent_legs_testing import free_port

SLACK_S = 1.5  # scheduling on a loaded machine, thread hand-offs, closing the connection
POLICY = {"allow": ["email.*"], "require_approval": [], "email": {"allow_recipients": ["*@example.com"]}}
PRE_CONTENT = ["greeting", "ehlo", "starttls", "after-starttls", "auth", "mail", "rcpt", "data"]
POST_CONTENT = ["dot"]


@dataclass
class FaultSmtp:
    """An SMTP server that hangs at ``hang_at`` (None: a healthy server)."""

    port: int = 0
    hang_at: str | None = None
    drop_after_content: bool = False
    tls: ssl.SSLContext | None = None
    connections: int = 0
    data_commands: int = 0
    contents: list[bytes] = field(default_factory=list)  # every message content received in full
    delivered: list[bytes] = field(default_factory=list)  # contents the server confirmed (250)
    commands: list[bytes] = field(default_factory=list)

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(4096):  # silent; reads until the client gives up
            pass

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.hang_at == "greeting":
                return await self._hang(reader)
            writer.write(b"220 fault.test ESMTP\r\n")
            await writer.drain()
            tls_on = False
            while line := await reader.readline():
                verb = line.strip().split(b" ", 1)[0].upper()
                self.commands.append(verb)
                if verb in (b"EHLO", b"HELO"):
                    if self.hang_at == "ehlo" or (self.hang_at == "after-starttls" and tls_on):
                        return await self._hang(reader)
                    ext = [b"fault.test", b"AUTH PLAIN", b"8BITMIME"]
                    if self.tls is not None and not tls_on:
                        ext.append(b"STARTTLS")
                    writer.write(b"".join(b"250-" + e + b"\r\n" for e in ext[:-1]) + b"250 " + ext[-1] + b"\r\n")
                elif verb == b"STARTTLS":
                    if self.hang_at == "starttls":
                        return await self._hang(reader)
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    assert self.tls is not None
                    await writer.start_tls(self.tls)
                    tls_on = True
                    continue
                elif verb == b"AUTH":
                    if self.hang_at == "auth":
                        return await self._hang(reader)
                    writer.write(b"235 2.7.0 Authentication successful\r\n")
                elif verb == b"MAIL":
                    if self.hang_at == "mail":
                        return await self._hang(reader)
                    writer.write(b"250 2.1.0 OK\r\n")
                elif verb == b"RCPT":
                    if self.hang_at == "rcpt":
                        return await self._hang(reader)
                    writer.write(b"250 2.1.5 OK\r\n")
                elif verb == b"DATA":
                    self.data_commands += 1
                    if self.hang_at == "data":
                        return await self._hang(reader)
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    content = await reader.readuntil(b"\r\n.\r\n")
                    self.contents.append(content)
                    if self.drop_after_content:
                        writer.transport.abort()
                        return None
                    if self.hang_at == "dot":
                        return await self._hang(reader)
                    self.delivered.append(content)
                    writer.write(b"250 2.0.0 OK queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return None
                else:
                    writer.write(b"250 OK\r\n" if verb in (b"RSET", b"NOOP") else b"500 unknown\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return None
        finally:
            writer.close()
        return None


@pytest.fixture
def fault_smtp(mail_ca: dict[str, str]) -> Iterator[FaultSmtp]:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(mail_ca["cert"], mail_ca["key"])
    srv = FaultSmtp(tls=tls)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: Any = None

    async def serve() -> None:
        nonlocal server
        server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        srv.port = server.sockets[0].getsockname()[1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True, name="fault-smtp")
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10), "the fault SMTP server did not start"
    yield srv

    async def stop() -> None:
        server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def make_legs(tmp_path: Path, smtp: dict[str, Any], policy_timeout_s: float = 60) -> Legs:
    ws, st = tmp_path / "ws", tmp_path / "state"
    return Legs(
        workspace=ws,
        state_dir=st,
        policy={**POLICY, "email": {**POLICY["email"], "timeout_s": policy_timeout_s}},
        secrets={"SMTP_PASSWORD": "pw-fault-test"},
        settings={"email": {"from_address": "bot@example.com", "smtp": smtp}},
    )


def smtp_settings(srv: FaultSmtp, ca: str, stage: str | None, timeout_s: float) -> dict[str, Any]:
    tls = stage in {"starttls", "after-starttls"}
    return {
        "host": "127.0.0.1",
        "port": srv.port,
        "security": "starttls" if tls else "none",
        "username": "bot",
        "password": "{secret:SMTP_PASSWORD}",
        "timeout_s": timeout_s,
        "ca_file": ca if tls else None,
    }


def send(legs: Legs, call_id: str) -> Any:
    return legs.run("email.send", {"to": ["ana@example.com"], "subject": "Q3", "body": "Numbers attached."}, call_id=call_id)


def ledger_state(tmp_path: Path, call_id: str) -> str | None:
    import asyncio

    from agent_legs._state._sqlite import SqliteStore

    async def read() -> str | None:
        store = SqliteStore(tmp_path / "state" / "state.sqlite3")
        try:
            entry = await store.send_entry(f"call:{call_id}")
        finally:
            await store.aclose()
        return entry.state if entry else None

    return asyncio.run(read())


# Both bounds: the mail server's own timeout (the policy's much longer), and the policy's (the server's longer).
BOUNDS = [pytest.param(2.0, 60.0, id="smtp.timeout_s=2"), pytest.param(30.0, 2.0, id="policy.timeout_s=2")]


@pytest.mark.parametrize(("smtp_timeout", "policy_timeout"), BOUNDS)
@pytest.mark.parametrize("stage", PRE_CONTENT)
def test_hang_before_the_content_is_a_bounded_retryable_timeout(
    fault_smtp: FaultSmtp,
    mail_ca: dict[str, str],
    tmp_path: Path,
    stage: str,
    smtp_timeout: float,
    policy_timeout: float,
) -> None:
    fault_smtp.hang_at = stage
    bound = min(smtp_timeout, policy_timeout)
    with make_legs(tmp_path, smtp_settings(fault_smtp, mail_ca["ca"], stage, smtp_timeout), policy_timeout) as legs:
        t = time.monotonic()
        r = send(legs, "call-1")
        elapsed = time.monotonic() - t
        assert elapsed <= bound + SLACK_S, f"{stage}: {elapsed:.2f} s for a {bound} s timeout"
        assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r.output
        assert r.data == {"possibly_sent": False, "stage": r.data["stage"]} and "nothing was" in r.error.message
        assert fault_smtp.contents == [] and ledger_state(tmp_path, "call-1") is None  # released
        # The server recovers; the agent retries the same call: sent, once.
        fault_smtp.hang_at = None
        again = send(legs, "call-1")
        assert again.ok and again.data["duplicate"] is False, again.output
        assert len(fault_smtp.delivered) == 1 and ledger_state(tmp_path, "call-1") == "sent"
        assert send(legs, "call-1").data["duplicate"] is True and len(fault_smtp.contents) == 1


@pytest.mark.parametrize(("smtp_timeout", "policy_timeout"), BOUNDS)
def test_hang_after_the_content_is_delivery_unknown_and_never_resent(
    fault_smtp: FaultSmtp,
    mail_ca: dict[str, str],
    tmp_path: Path,
    smtp_timeout: float,
    policy_timeout: float,
) -> None:
    fault_smtp.hang_at = "dot"  # the final dot arrived; the 250 never comes
    bound = min(smtp_timeout, policy_timeout)
    with make_legs(tmp_path, smtp_settings(fault_smtp, mail_ca["ca"], "dot", smtp_timeout), policy_timeout) as legs:
        t = time.monotonic()
        r = send(legs, "call-2")
        elapsed = time.monotonic() - t
        assert elapsed <= bound + SLACK_S, f"{elapsed:.2f} s for a {bound} s timeout"
        assert r.error is not None and r.error.type == "timeout" and r.error.retryable is False, r.output
        assert r.data["possibly_sent"] is True and r.data["message_id"].startswith("<agent-legs.")
        assert "delivery is unknown" in r.error.message and "same call id will not send it again" in r.error.message
        assert r.error.hint and "Do NOT send" in r.error.hint and "new call" in r.error.hint
        assert "Sent folder" in r.error.hint and "ask the user" in r.error.hint
        assert len(fault_smtp.contents) == 1 and ledger_state(tmp_path, "call-2") == "unknown"
        fault_smtp.hang_at = None
        again = send(legs, "call-2")  # the same call again: reported, not sent
        assert again.error is not None and again.error.type == "failed" and not again.error.retryable
        assert again.data["possibly_sent"] is True and "Do NOT send" in (again.error.hint or "")
    assert fault_smtp.data_commands == 1 and len(fault_smtp.contents) == 1 and fault_smtp.delivered == []


def test_connection_dropped_after_the_content_is_delivery_unknown(
    fault_smtp: FaultSmtp,
    mail_ca: dict[str, str],
    tmp_path: Path,
) -> None:
    fault_smtp.drop_after_content = True
    with make_legs(tmp_path, smtp_settings(fault_smtp, mail_ca["ca"], None, 5)) as legs:
        r = send(legs, "call-3")
        assert r.error is not None and r.error.type == "failed" and r.error.retryable is False
        assert r.data["possibly_sent"] is True and r.error.hint and "Do NOT send" in r.error.hint
        fault_smtp.drop_after_content = False
        assert send(legs, "call-3").data["possibly_sent"] is True
    assert fault_smtp.data_commands == 1 and fault_smtp.connections == 1


@pytest.mark.parametrize(("smtp_timeout", "policy_timeout"), BOUNDS)
def test_smtp_down_is_unavailable_within_the_timeout(tmp_path: Path, smtp_timeout: float, policy_timeout: float) -> None:
    port = free_port()  # a port nobody listens on: connection refused
    smtp = {"host": "127.0.0.1", "port": port, "security": "none", "timeout_s": smtp_timeout}
    with make_legs(tmp_path, smtp, policy_timeout) as legs:
        t = time.monotonic()
        r = send(legs, "call-5")
        elapsed = time.monotonic() - t
        assert elapsed <= min(smtp_timeout, policy_timeout) + SLACK_S
        assert r.error is not None and r.error.type == "unavailable" and r.error.retryable, r.output
        assert "attempts" in r.error.message and ledger_state(tmp_path, "call-5") is None


# -- IMAP ----------------------------------------------------------------------------------------------
@pytest.fixture
def slow_imap() -> Iterator[int]:
    """An IMAP server that answers every command correctly, each after 1.2 s (within a 2 s socket timeout)."""
    delay = 1.2

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(delay)
            writer.write(b"* OK [CAPABILITY IMAP4rev1] slow.test ready\r\n")
            await writer.drain()
            while line := await reader.readline():
                tag, _, rest = line.strip().partition(b" ")
                command = rest.split(b" ", 1)[0].upper()
                await asyncio.sleep(delay)
                if command == b"CAPABILITY":
                    writer.write(b"* CAPABILITY IMAP4rev1\r\n")
                elif command in (b"SELECT", b"EXAMINE"):
                    writer.write(b"* 0 EXISTS\r\n* 0 RECENT\r\n")
                elif command == b"LOGOUT":
                    writer.write(b"* BYE\r\n" + tag + b" OK done\r\n")
                    await writer.drain()
                    return
                writer.write(tag + b" OK done\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    loop = asyncio.new_event_loop()
    ready: list[Any] = []

    async def serve() -> None:
        ready.append(await asyncio.start_server(handle, "127.0.0.1", 0))

    thread = threading.Thread(target=loop.run_forever, daemon=True, name="slow-imap")
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    yield ready[0].sockets[0].getsockname()[1]

    async def stop() -> None:
        ready[0].close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_imap_timeout_bounds_the_whole_session(slow_imap: int, tmp_path: Path) -> None:
    # greeting, CAPABILITY, LOGIN, SELECT, LOGOUT: 6 s of answers, each inside the 2 s socket timeout.
    imap = {
        "host": "127.0.0.1",
        "port": slow_imap,
        "security": "none",
        "username": "bot",
        "password": "{secret:SMTP_PASSWORD}",
        "timeout_s": 2,
    }
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "state",
        policy={"email": {"timeout_s": 60}},
        secrets={"SMTP_PASSWORD": "pw-fault-test"},
        settings={"email": {"imap": imap}},
    ) as legs:
        t = time.monotonic()
        r = legs.run("email.list", {})
        elapsed = time.monotonic() - t
    assert elapsed <= 2 + SLACK_S, f"{elapsed:.2f} s for a 2 s timeout"
    assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r.output
    assert "settings.email.imap.timeout_s" in r.error.message
