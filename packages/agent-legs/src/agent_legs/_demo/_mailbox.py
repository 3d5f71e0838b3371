"""An IMAP mailbox for the demo: a real Dovecot with its own config on a free loopback port.

There is no maintained IMAP server in Python, so the demo uses Dovecot when it is installed
(``dovecot-imapd``; ``shared/setup.sh`` installs it as root). As root it runs as Dovecot's own
unprivileged users; otherwise as the current user with no chroot. Plain IMAP without TLS is fine
here: it never leaves 127.0.0.1 (and the email actions allow ``security = "none"`` only on loopback).
When Dovecot is missing or does not start, ``start_mailbox`` says why and the demo skips the inbox.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from ._services import STOCK

USER = "team"


@dataclass
class Mailbox:
    port: int
    password: str
    root: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def supplier_email() -> bytes:
    """The message waiting in the inbox: the supplier's stock list as a CSV attachment."""
    msg = EmailMessage()
    msg["From"] = "orders@supplier.example.com"
    msg["To"] = "team@example.com"
    msg["Subject"] = "Stock levels this week"
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="supplier.example.com")
    msg.set_content("Hello,\n\nattached are this week's stock levels for your catalogue.\n\nBest regards,\nSupplier\n")
    csv = "product,units\n" + "".join(f"{name},{units}\n" for name, units in STOCK.items())
    msg.add_attachment(csv.encode(), maintype="text", subtype="csv", filename="stock.csv")
    return bytes(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mailbox(messages: list[bytes]) -> tuple[Mailbox | None, str]:
    """Start Dovecot with ``messages`` in the INBOX. Returns (mailbox, "") or (None, why not)."""
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    if binary is None:
        return None, "Dovecot is not installed (Debian/Ubuntu: apt-get install -y dovecot-imapd)"
    root_mode = os.geteuid() == 0
    try:
        if root_mode:
            internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
            owner = internal
        else:
            owner = internal = login = pwd.getpwuid(os.getuid())
    except KeyError as exc:
        return None, f"Dovecot's system users are missing ({exc}); reinstall dovecot-core"
    # Dovecot's unprivileged processes must traverse this path, so not a 0700 temp dir.
    root = Path(tempfile.mkdtemp(prefix="agent-legs-demo-imap-"))
    os.chmod(root, 0o755)  # noqa: S103
    password = secrets.token_urlsafe(16)
    port = _free_port()
    home = root / "home" / USER
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for d in ("run", "state"):
        (root / d).mkdir()
    for i, raw in enumerate(messages):
        (maildir / "new" / f"{time.time():.6f}.demo{i}.localhost").write_bytes(raw)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{password}::::::\n")
    (root / "passwd").chmod(0o640)
    conf = root / "dovecot.conf"
    conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = {owner.pw_uid}
default_internal_user = {internal.pw_name}
default_login_user = {login.pw_name}
default_internal_group = {grp.getgrgid(internal.pw_gid).gr_name}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
    if root_mode:
        for p in [root / "home", *(root / "home").rglob("*")]:
            os.chown(p, owner.pw_uid, owner.pw_gid)
        os.chown(root / "passwd", 0, internal.pw_gid)
    proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Mailbox(port, password, root, proc), ""
        except OSError:
            time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    log = (root / "dovecot.log").read_text(errors="replace") if (root / "dovecot.log").exists() else ""
    shutil.rmtree(root, ignore_errors=True)
    reason = (out + log).strip().splitlines()
    return None, "Dovecot did not start: " + (reason[-1] if reason else "no output")
