"""Real mail servers for tests: aiosmtpd (STARTTLS with a trustme CA, AUTH required) and Dovecot IMAP.

``smtp_server`` records every accepted message; ``smtp_server.replies`` can script SMTP answers
for DATA (e.g. ``["451 4.3.0 try again", None]``: first a 451, then accept). ``dovecot`` starts
a real Dovecot on a high loopback port, with its own config and a maildir seeded by the test.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from ._net import free_port
from ._require import component_missing

USER, PASSWORD = "bot", "s3cret-mail-pass"


@pytest.fixture(scope="session")
def mail_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    d = tmp_path_factory.mktemp("mail-tls")
    paths = {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return paths


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: list[str | None] = field(default_factory=list)
    data_attempts: int = 0

    def settings(self, ca_file: str, password: str = "{secret:SMTP_PASSWORD}") -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "security": "starttls", "username": USER, "password": password,
                "ca_file": ca_file, "timeout_s": 10}

    def parsed(self, i: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.messages[i]["data"], policy=email.policy.default)  # type: ignore[return-value]



@pytest.fixture
def smtp_server(mail_ca: dict[str, str]) -> Iterator[SmtpServer]:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    srv = SmtpServer("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            srv.data_attempts += 1
            if srv.replies:
                scripted = srv.replies.pop(0)
                if scripted is not None:
                    return scripted
            srv.messages.append({"from": envelope.mail_from, "rcpt": list(envelope.rcpt_tos),
                                 "data": envelope.original_content or envelope.content})
            return "250 2.0.0 OK queued"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and \
            auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # unhandled: the server answers 535 itself

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(mail_ca["cert"], mail_ca["key"])
    controller = Controller(Handler(), hostname=srv.host, port=srv.port, tls_context=context, require_starttls=True,
                            auth_required=True, auth_require_tls=True, authenticator=authenticator,
                            server_hostname="localhost")
    controller.start()
    yield srv
    controller.stop()


@dataclass
class Dovecot:
    host: str
    port: int
    maildir: Path
    uid: int
    gid: int

    def settings(self, ca_file: str) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "security": "tls", "username": USER,
                "password": "{secret:SMTP_PASSWORD}", "ca_file": ca_file, "timeout_s": 10}

    def deliver(self, raw: bytes, seen: bool = False, when: float | None = None) -> None:
        """Put a message into the maildir (as a delivery agent would)."""
        name = f"{time.time():.6f}.{os.getpid()}.{len(list((self.maildir / 'cur').iterdir()))}.localhost"
        target = self.maildir / ("cur" if seen else "new") / (name + (":2,S" if seen else ""))
        target.write_bytes(raw)
        if when is not None:
            os.utime(target, (when, when))
        os.chown(target, self.uid, self.gid)


@pytest.fixture
def dovecot(tmp_path: Path, mail_ca: dict[str, str]) -> Iterator[Dovecot]:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        component_missing("Dovecot", "dovecot is not installed", "apt-get install -y dovecot-imapd")
    import pwd

    try:
        user = pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError:
        component_missing("Dovecot", "the dovecot system users are missing", "apt-get install -y dovecot-imapd")
    import tempfile

    # Dovecot's unprivileged processes must traverse this path: pytest's tmp dirs are 0700.
    root = Path(tempfile.mkdtemp(prefix="agent-legs-dovecot-"))
    os.chmod(root, 0o755)
    home = root / "home" / USER
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for d in (root / "run", root / "state"):
        d.mkdir(parents=True)
    port = free_port()
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    conf = root / "dovecot.conf"
    conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = required
ssl_cert = <{mail_ca['cert']}
ssl_key = <{mail_ca['key']}
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = {user.pw_uid}
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={user.pw_uid} gid={user.pw_gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
    for p in [root, root / "home", home, *home.rglob("*")]:
        os.chown(p, user.pw_uid, user.pw_gid)
    os.chmod(root, 0o755)
    proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    else:
        proc.kill()
    if proc.poll() is not None:
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
        component_missing("Dovecot", f"it did not start: {out[-1500:]} {log[-1500:]}", "see the log above")
    try:
        yield Dovecot("127.0.0.1", port, maildir, user.pw_uid, user.pw_gid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
