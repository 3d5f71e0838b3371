"""A throwaway Dovecot IMAP server: its own config and maildir in a temp dir, on free loopback ports.

The demo's inbox, and the IMAP server of the tests and benchmarks (``agent_legs_testing.mail``
imports it from here: one launcher, shipped with the demo, shared by the test fixtures):
there is no maintained IMAP server in Python, so a real Dovecot (``dovecot-imapd``) is started by
hand. As root it runs as Dovecot's own unprivileged users; otherwise as the current user with no
chroot. With ``tls`` it offers implicit TLS on ``port`` and STARTTLS on ``starttls_port`` and refuses
plaintext logins; without, plain IMAP on ``port`` (fine on 127.0.0.1 only: the email actions allow
``security = "none"`` only on loopback).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DovecotServer", "DovecotUnavailable", "start_dovecot"]


class DovecotUnavailable(RuntimeError):
    """Dovecot is missing or did not start; ``fix`` says what to do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"Dovecot: {reason} ({fix})")
        self.reason, self.fix = reason, fix


@dataclass
class DovecotServer:
    host: str
    port: int
    starttls_port: int  # 0 without TLS
    user: str
    password: str
    root: Path
    maildir: Path
    uid: int
    gid: int
    proc: subprocess.Popen[bytes]

    def deliver(self, raw: bytes, seen: bool = False, when: float | None = None, folder: str | None = None) -> None:
        """Put a message into the maildir (as a delivery agent would); ``folder`` in Dovecot's
        Maildir++ naming (e.g. ``Archive`` -> ``.Archive``)."""
        box = self.maildir if folder is None else self.maildir / f".{folder}"
        if not box.exists():
            for sub in ("cur", "new", "tmp"):
                (box / sub).mkdir(parents=True)
                self._own(box / sub)
            self._own(box)
        seq = sum(1 for _ in (box / "cur").iterdir()) + sum(1 for _ in (box / "new").iterdir())
        name = f"{time.time():.6f}.{os.getpid()}_{seq}.localhost"
        target = box / ("cur" if seen else "new") / (name + (":2,S" if seen else ""))
        target.write_bytes(raw)
        if when is not None:
            os.utime(target, (when, when))
        self._own(target)

    def stop(self) -> None:
        # A clean SIGTERM shutdown takes Dovecot 1-6 s; nothing of a throwaway server needs keeping.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listeners(port: int, starttls_port: int, tls: bool) -> str:
    if not tls:
        return (
            f"inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }"
        )
    return (
        f"inet_listener imap {{\n    address = 127.0.0.1\n    port = {starttls_port}\n  }}\n"
        f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {port}\n    ssl = yes\n  }}"
    )


def start_dovecot(
    user: str, password: str, tls: tuple[str, str] | None = None, prefix: str = "agent-legs-dovecot-"
) -> DovecotServer:
    """Start Dovecot with one passwd-file user and an empty INBOX; ``tls`` is (cert, key) PEM paths.

    Raises ``DovecotUnavailable`` when it is not installed or does not start; ``stop()`` ends it.
    """
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        raise DovecotUnavailable("dovecot is not installed", "apt-get install -y dovecot-imapd")
    as_root = os.geteuid() == 0
    try:
        if as_root:
            internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
            owner = internal
        else:
            owner = internal = login = pwd.getpwuid(os.getuid())
    except KeyError as exc:
        raise DovecotUnavailable(
            f"its system users are missing ({exc})", "apt-get install --reinstall -y dovecot-core dovecot-imapd"
        ) from None
    # Dovecot's unprivileged processes must traverse this path, so not a 0700 temp dir.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # noqa: S103
    home = root / "home" / user
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for d in ("run", "state"):
        (root / d).mkdir()
    port, starttls_port = _free_port(), (_free_port() if tls else 0)
    passwd = root / "passwd"
    passwd.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
    passwd.chmod(0o640)
    ssl = (
        f"ssl = required\nssl_cert = <{tls[0]}\nssl_key = <{tls[1]}\ndisable_plaintext_auth = yes"
        if tls
        else "ssl = no\ndisable_plaintext_auth = no"
    )
    conf = root / "dovecot.conf"
    conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
{ssl}
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = {owner.pw_uid}
default_internal_user = {internal.pw_name}
default_internal_group = {grp.getgrgid(internal.pw_gid).gr_name}
default_login_user = {login.pw_name}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  {_listeners(port, starttls_port, tls is not None)}
}}
service anvil {{
  chroot =
}}
""")
    if as_root:
        for p in [root / "home", home, *home.rglob("*")]:
            os.chown(p, owner.pw_uid, owner.pw_gid)
        os.chown(passwd, 0, internal.pw_gid)
    with open(root / "stdout.log", "wb") as out:  # a file, not a pipe nobody reads; the child keeps its copy
        # Its own process group: stop() ends the master and all its children together.
        proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = DovecotServer("127.0.0.1", port, starttls_port, user, password, root, maildir, owner.pw_uid, owner.pw_gid, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            for listening in (port, starttls_port) if tls else (port,):
                socket.create_connection(("127.0.0.1", listening), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.05)
    text = "".join(p.read_text(errors="replace") for p in (root / "stdout.log", root / "dovecot.log") if p.exists())
    server.stop()
    lines = text.strip().splitlines()
    raise DovecotUnavailable(
        f"it did not start: {lines[-1] if lines else 'no output'}",
        f"see its log: {text[-1500:]}" if len(lines) > 1 else "check the Dovecot install",
    )
