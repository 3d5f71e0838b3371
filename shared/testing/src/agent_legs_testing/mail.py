"""Real mail servers for tests: aiosmtpd (STARTTLS with a trustme CA, AUTH required) and Dovecot IMAP.

Fixtures:

* ``mail_ca``: a private CA (trustme) and a certificate for ``localhost``/``127.0.0.1``; paths
  ``ca``, ``cert``, ``key``.
* ``smtp_server``: aiosmtpd on 127.0.0.1 requiring STARTTLS and AUTH (``USER``/``PASSWORD``),
  recording every accepted message. Scriptable: ``replies`` answers DATA in turn (e.g.
  ``["451 4.3.0 try again", None]``: a 451, then accept), ``refuse`` maps recipients to an RCPT
  answer, ``drop_in_data`` closes the connection once the content arrived, without a reply, and
  ``hang_in_data`` holds the reply back for 10 s.
* ``silent_server``: a TCP listener that accepts and never says a word (a hung server).
* ``dovecot``: a real Dovecot with its own config on high loopback ports (implicit TLS on
  ``port``, STARTTLS on ``starttls_port``), a passwd-file user and a maildir the test seeds with
  ``deliver``. Fails the test (never skips) when Dovecot is missing or does not start.

``start_dovecot`` and ``make_ca`` work outside pytest too (the benchmarks use them).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme

from ._net import free_port
from ._require import component_missing

if TYPE_CHECKING:
    from agent_legs_demo.dovecot import DovecotServer

USER, PASSWORD = "bot", "s3cret-mail-pass"


class MailComponentMissing(RuntimeError):
    def __init__(self, component: str, reason: str, fix: str) -> None:
        super().__init__(f"{component}: {reason} ({fix})")
        self.component, self.reason, self.fix = component, reason, fix


def make_ca(directory: Path) -> dict[str, str]:
    """A private CA and a server certificate for localhost/127.0.0.1, written as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": str(directory / "ca.pem"), "cert": str(directory / "cert.pem"), "key": str(directory / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as f:
        f.writelines(blob.bytes() for blob in cert.cert_chain_pems)
    return paths


@pytest.fixture(scope="session")
def mail_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_ca(tmp_path_factory.mktemp("mail-tls"))


# -- SMTP ---------------------------------------------------------------------------------------------
@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: list[str | None] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    drop_in_data: bool = False
    hang_in_data: bool = False
    data_attempts: int = 0
    logins: int = 0

    def settings(self, ca_file: str | None, password: str = "{secret:SMTP_PASSWORD}") -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "security": "starttls",
            "username": USER,
            "password": password,
            "ca_file": ca_file,
            "timeout_s": 10,
        }

    def parsed(self, i: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.messages[i]["data"], policy=email.policy.default)  # type: ignore[return-value]


@pytest.fixture
def smtp_server(mail_ca: dict[str, str]) -> Iterator[SmtpServer]:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    srv = SmtpServer("127.0.0.1", free_port())

    class Handler:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
            if address.lower() in srv.refuse:
                return srv.refuse[address.lower()]
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            srv.data_attempts += 1
            if srv.hang_in_data:  # the content arrived; the reply is late (the client may die meanwhile)
                await asyncio.sleep(10)
                return "451 4.3.0 too late"
            if srv.drop_in_data:
                server.transport.abort()  # the content arrived; the reply never will
                return "250 2.0.0 OK (never sent)"
            if srv.replies:
                scripted = srv.replies.pop(0)
                if scripted is not None:
                    return scripted
            srv.messages.append(
                {
                    "from": envelope.mail_from,
                    "rcpt": list(envelope.rcpt_tos),
                    "data": envelope.original_content or envelope.content,
                }
            )
            return "250 2.0.0 OK queued"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        srv.logins += 1
        return AuthResult(success=ok, handled=False)  # unhandled: the server answers 535 itself

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(mail_ca["cert"], mail_ca["key"])
    controller = Controller(
        Handler(),
        hostname=srv.host,
        port=srv.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
        server_hostname="localhost",
    )
    try:
        controller.start()
    except Exception as exc:
        component_missing("aiosmtpd SMTP server", f"it did not start: {exc!r}", "pip install aiosmtpd")
    yield srv
    controller.stop()


@dataclass
class SilentServer:
    """Accepts TCP connections and never answers: a hung SMTP or IMAP server."""

    host: str
    port: int
    accepted: int = 0
    closed: list[float] = field(default_factory=list)  # monotonic times the peer closed


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    listener = socket.create_server(("127.0.0.1", 0))
    srv = SilentServer("127.0.0.1", listener.getsockname()[1])
    stop = threading.Event()

    def hold(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            while not stop.is_set():
                try:
                    if conn.recv(65536) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            srv.closed.append(time.monotonic())

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            srv.accepted += 1
            threading.Thread(target=hold, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# -- IMAP (Dovecot) -----------------------------------------------------------------------------------
class Dovecot:
    """The throwaway Dovecot of the demo package (``agent_legs_demo.dovecot``, the demo's inbox too), with TLS.

    Wraps the launcher's ``DovecotServer`` (its attributes and methods are this object's): the demo package
    is imported only when a test starts Dovecot, so the fixtures load without it."""

    def __init__(self, server: DovecotServer) -> None:
        self.server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    def settings(self, ca_file: str | None, security: str = "tls", password: str = "{secret:SMTP_PASSWORD}") -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.starttls_port if security == "starttls" else self.port,
            "security": security,
            "username": USER,
            "password": password,
            "ca_file": ca_file,
            "timeout_s": 10,
        }


@contextlib.contextmanager
def start_dovecot(ca: dict[str, str]) -> Iterator[Dovecot]:
    """Dovecot for ``USER``/``PASSWORD``, implicit TLS on ``port`` and STARTTLS on ``starttls_port``
    with ``ca``'s certificate, stopped on exit. Raises ``MailComponentMissing`` when it cannot start."""
    try:
        from agent_legs_demo.dovecot import DovecotUnavailable
        from agent_legs_demo.dovecot import start_dovecot as start_launcher
    except ModuleNotFoundError as exc:
        raise MailComponentMissing(
            "Dovecot launcher", f"the demo package is not installed ({exc})", "pip install -e packages/agent-legs-demo"
        ) from None
    try:
        server = start_launcher(USER, PASSWORD, tls=(ca["cert"], ca["key"]))
    except DovecotUnavailable as exc:
        raise MailComponentMissing("Dovecot", exc.reason, exc.fix) from None
    try:
        yield Dovecot(server)
    finally:
        server.stop()


@pytest.fixture
def dovecot(mail_ca: dict[str, str]) -> Iterator[Dovecot]:
    try:
        cm = start_dovecot(mail_ca)
        server = cm.__enter__()
    except MailComponentMissing as exc:
        component_missing(exc.component, exc.reason, exc.fix)
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)
