"""email.send to a local SMTP server against raw aiosmtplib; email.list of 20 on a 1,000-message mailbox.

send: aiosmtpd on loopback, plain (``security="none"``, the target's setting) and STARTTLS + AUTH
(a real deployment's path), each agent-legs call against the same work done with aiosmtplib alone
(one connection per message in both). list: a real Dovecot over TLS, 1,000 messages, newest 20,
against the same IMAP commands issued with imaplib directly.
"""

from __future__ import annotations

import asyncio
import imaplib
import itertools
import ssl
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from agent_legs import Legs

from ._stats import ratio, summarize, time_async, time_sync


def run(iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        from agent_legs_testing.mail import make_ca

        ca = make_ca(Path(tmp) / "ca")
        result: dict[str, Any] = {"send": _send(iterations, Path(tmp), ca)}
        result["list"] = _list(iterations, Path(tmp), ca)
    send, listing = result["send"], result["list"]
    result["targets"] = {"email.send p50 <= 15 ms": send["plain"]["agent_legs"]["p50_us"] <= 15_000}
    result["summary"] = {
        "email.send p50 ms (plain loopback)": round(send["plain"]["agent_legs"]["p50_us"] / 1000, 2),
        "raw aiosmtplib p50 ms (plain loopback)": round(send["plain"]["raw_aiosmtplib"]["p50_us"] / 1000, 2),
        "email.send p50 ms (STARTTLS+AUTH)": round(send["starttls_auth"]["agent_legs"]["p50_us"] / 1000, 2),
        "email.list 20 of 1000 p50 ms": round(listing["all"]["agent_legs"]["p50_us"] / 1000, 2),
        "raw imaplib list 20 of 1000 p50 ms": round(listing["all"]["raw_imaplib"]["p50_us"] / 1000, 2),
        "email.list query p50 ms": round(listing["query"]["agent_legs"]["p50_us"] / 1000, 2),
    }
    result["notes"] = (
        "agent-legs send includes recipient policy, header checks, the at-most-once ledger (one "
        "fsync'd SQLite write, one unsynced), a span and a log line; list/read open one IMAP session per call"
    )
    return result


def _send(iterations: int, tmp: Path, ca: dict[str, str]) -> dict[str, Any]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=isinstance(data, LoginPassword) and data.password == b"pw")

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(ca["cert"], ca["key"])
    from agent_legs_testing._net import free_port

    plain = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    secure = Controller(
        Sink(),
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=auth,
        server_hostname="localhost",
    )
    plain.start()
    secure.start()
    client_tls = ssl.create_default_context(cafile=ca["ca"])
    out: dict[str, Any] = {}
    try:
        out["plain"] = _send_case(iterations, tmp / "plain", plain.port, {"security": "none"}, None)
        out["starttls_auth"] = _send_case(
            iterations // 2,
            tmp / "starttls",
            secure.port,
            {"security": "starttls", "username": "bot", "password": "{secret:PW}", "ca_file": ca["ca"]},
            client_tls,
        )
    finally:
        plain.stop()
        secure.stop()
    return out


def _send_case(iterations: int, tmp: Path, port: int, smtp: dict[str, Any], client_tls: ssl.SSLContext | None) -> dict[str, Any]:
    import aiosmtplib

    counter = itertools.count()
    with Legs(
        workspace=tmp / "ws",
        state_dir=tmp / "st",
        secrets={"PW": "pw"},
        policy={"require_approval": [], "allow": ["email.*"], "email": {"allow_recipients": ["*@example.com"]}},
        settings={"email": {"from_address": "bot@example.com", "smtp": {"host": "127.0.0.1", "port": port, **smtp}}},
    ) as legs:

        async def legs_send() -> None:
            r = await legs.arun("email.send", {"to": ["ana@example.com"], "subject": f"n{next(counter)}", "body": "hello"})
            assert r.ok, r.output

        async def raw_send() -> None:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "bot@example.com", "ana@example.com", f"r{next(counter)}"
            msg.set_content("hello")
            if client_tls is not None:
                await aiosmtplib.send(
                    msg, hostname="127.0.0.1", port=port, start_tls=True, tls_context=client_tls, username="bot", password="pw"
                )
            else:
                await aiosmtplib.send(msg, hostname="127.0.0.1", port=port)

        async def main() -> dict[str, Any]:
            n = max(1, iterations // 5)
            samples: dict[str, list[float]] = {"agent_legs": [], "raw_aiosmtplib": []}
            for _ in range(5):  # alternating rounds: drift hits both alike
                samples["agent_legs"] += await time_async(legs_send, n, 2)
                samples["raw_aiosmtplib"] += await time_async(raw_send, n, 2)
            return {k: summarize(v) for k, v in samples.items()}

        res = asyncio.run(main())
    res["ratio_vs_raw"] = ratio(res["agent_legs"], res["raw_aiosmtplib"])
    return res


def _list(iterations: int, tmp: Path, ca: dict[str, str]) -> dict[str, Any]:
    from agent_legs_testing.mail import PASSWORD, USER, start_dovecot

    with start_dovecot(ca) as dovecot:
        t = time.perf_counter()
        for i in range(1000):
            msg = EmailMessage()
            msg["From"] = "ana@example.com" if i % 10 == 0 else f"sender{i}@example.org"
            msg["To"] = "bot@example.com"
            msg["Subject"] = f"Message {i}"
            msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
            msg.set_content(f"Body of message {i}.\n" * 20)
            dovecot.deliver(msg.as_bytes(), seen=i % 3 != 0)
        seeded_s = time.perf_counter() - t
        settings = dovecot.settings(ca["ca"])
        client_tls = ssl.create_default_context(cafile=ca["ca"])
        with Legs(
            workspace=tmp / "ws-imap",
            state_dir=tmp / "st-imap",
            secrets={"SMTP_PASSWORD": PASSWORD},
            settings={"email": {"imap": settings}},
        ) as legs:

            def legs_list(query: str | None = None) -> None:
                r = legs.run("email.list", {"limit": 20, "query": query})
                assert r.ok and r.data is not None and len(r.data["messages"]) == 20, r.output

            def raw_list() -> None:
                conn = imaplib.IMAP4_SSL(dovecot.host, dovecot.port, ssl_context=client_tls)
                conn.login(USER, PASSWORD)
                _, data = conn.select("INBOX", readonly=True)
                n = int(data[0] or 0)
                conn.fetch(f"{n - 19}:{n}", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])")
                conn.logout()

            n = max(1, iterations // 10)
            samples: dict[str, list[float]] = {"agent_legs": [], "raw_imaplib": [], "query": []}
            time_sync(legs_list, 0, warmup=3)  # Dovecot builds its index on the first SELECT
            for _ in range(5):
                samples["agent_legs"] += time_sync(legs_list, n, warmup=1)
                samples["raw_imaplib"] += time_sync(raw_list, n, warmup=1)
                samples["query"] += time_sync(lambda: legs_list("from:ana@example.com"), n, warmup=1)
            read_samples = time_sync(lambda: legs.run("email.read", {"id": "500"}), max(1, n), warmup=1)
    everything: dict[str, Any] = {
        "agent_legs": summarize(samples["agent_legs"]),
        "raw_imaplib": summarize(samples["raw_imaplib"]),
    }
    everything["ratio_vs_raw"] = ratio(everything["agent_legs"], everything["raw_imaplib"])
    return {
        "all": everything,
        "query": {"agent_legs": summarize(samples["query"])},
        "read": {"agent_legs": summarize(read_samples)},
        "mailbox_messages": 1000,
        "seed_s": round(seeded_s, 2),
    }
