"""email.list / email.read against a real Dovecot IMAP server (TLS or STARTTLS with a private CA)."""

from __future__ import annotations

import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from agent_legs import Legs
from agent_legs.actions.email._utf7 import utf7_decode, utf7_encode
from agent_legs_testing import free_port
from agent_legs_testing.mail import PASSWORD


def message(
    subject: str,
    body: str = "hello",
    sender: str = "ana@example.com",
    html: str | None = None,
    attachment: tuple[str, bytes] | None = None,
    date: str = "Mon, 02 Nov 2026 10:00:00 +0000",
    html_only: bool = False,
    to: str = "bot@example.com",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = f"<{abs(hash(subject))}@example.com>"
    if html_only:
        msg.set_content(html or "", subtype="html")
    else:
        msg.set_content(body)
        if html:
            msg.add_alternative(html, subtype="html")
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return msg.as_bytes()


BIG = 5 * 1024 * 1024


@pytest.fixture
def mailbox(dovecot):
    dovecot.deliver(message("Invoice 42", "Please pay 100 EUR", date="Mon, 02 Nov 2026 10:00:00 +0000"), seen=True)
    dovecot.deliver(
        message(
            "Grüße aus Köln ☕", "Unicode body: ünïcödé", sender="Jörg <bob@example.org>", date="Tue, 03 Nov 2026 10:00:00 +0000"
        )
    )
    dovecot.deliver(
        message("Newsletter", "plain part", html="<h1>News</h1><p>Big <b>sale</b></p>", date="Wed, 04 Nov 2026 10:00:00 +0000")
    )
    dovecot.deliver(
        message(
            "With attachment",
            "see file",
            attachment=("../../etc/evil name?.bin", b"\x00\x01data"),
            date="Thu, 05 Nov 2026 10:00:00 +0000",
        )
    )
    dovecot.deliver(message("Big one", "x" * BIG, date="Fri, 06 Nov 2026 10:00:00 +0000"))
    return dovecot


def make_legs(dirs, settings, policy=None, **kw) -> Legs:
    ws, st = dirs
    return Legs(
        workspace=ws,
        state_dir=st,
        secrets={"SMTP_PASSWORD": PASSWORD},
        policy=policy,
        settings={"email": {"imap": settings}},
        **kw,
    )


@pytest.fixture
def legs(dirs, mailbox, mail_ca, captured_spans):
    with make_legs(dirs, mailbox.settings(mail_ca["ca"]), tracer_provider=captured_spans.provider) as legs:
        yield legs


def ids(legs, folder="INBOX"):
    return {m["subject"]: m["id"] for m in legs.run("email.list", {"folder": folder}).data["messages"]}


def test_list_newest_first(legs) -> None:
    r = legs.run("email.list", {})
    assert r.ok and r.data["total"] == 5 and r.data["untrusted"] is True
    assert r.data["provenance"]["source"] == "email"
    subjects = [m["subject"] for m in r.data["messages"]]
    assert subjects == ["Big one", "With attachment", "Newsletter", "Grüße aus Köln ☕", "Invoice 42"]
    assert [m["seen"] for m in r.data["messages"]] == [False, False, False, False, True]
    first = r.data["messages"][1]
    assert first["from"] == "ana@example.com" and first["to"] == "bot@example.com" and first["date"].startswith("Thu")
    assert r.data["messages"][0]["size"] > BIG
    assert "Grüße aus Köln ☕" in r.output and "untrusted" in r.output


def test_list_limit_and_filters(legs) -> None:
    def subjects(query=None, **kw):
        r = legs.run("email.list", {"query": query, **kw})
        assert r.ok, r.output
        return [m["subject"] for m in r.data["messages"]]

    r = legs.run("email.list", {"limit": 2})
    assert len(r.data["messages"]) == 2 and r.data["total"] == 5 and "showing the newest 2" in r.output
    assert subjects("from:bob@example.org") == ["Grüße aus Köln ☕"]
    assert subjects('subject:"Invoice"') == ["Invoice 42"]
    assert subjects("to:bot@example.com", limit=1) == ["Big one"]
    assert legs.run("email.list", {"unread_only": True}).data["total"] == 4
    assert subjects("unseen from:ana@example.com", limit=2) == ["Big one", "With attachment"]
    assert subjects("is:read") == ["Invoice 42"]
    assert subjects("since:2026-11-05") == ["Big one", "With attachment"]
    assert subjects("since:2026-11-03 before:2026-11-04") == ["Grüße aus Köln ☕"]
    assert subjects("text:sale") == ["Newsletter"]
    assert subjects("pay") == ["Invoice 42"]  # a bare word searches the text
    assert subjects("subject:nothing-like-this") == []


def test_non_ascii_search(legs) -> None:
    r = legs.run("email.list", {"query": "subject:Grüße"})
    assert [m["subject"] for m in r.data["messages"]] == ["Grüße aus Köln ☕"]
    r = legs.run("email.list", {"query": "subject:Köln from:Jörg unseen"})  # two UTF-8 values: two searches
    assert [m["subject"] for m in r.data["messages"]] == ["Grüße aus Köln ☕"]
    r = legs.run("email.list", {"query": "subject:Köln from:Ana"})
    assert r.data["messages"] == []


def test_bad_queries_are_invalid_input(legs) -> None:
    for query in ("color:red", 'subject:"x\r\nA1 LOGOUT"', "since:yesterday", 'subject:"unclosed', "subject:"):
        r = legs.run("email.list", {"query": query})
        assert r.error.type == "invalid_input", query
        assert r.error.hint or "control" in r.error.message or "YYYY" in r.error.message


def test_read_plain_unicode_and_untrusted(legs) -> None:
    r = legs.run("email.read", {"id": ids(legs)["Grüße aus Köln ☕"]})
    assert r.ok and r.data["headers"]["Subject"] == "Grüße aus Köln ☕" and "ünïcödé" in r.data["body"]
    assert r.data["headers"]["From"] == "Jörg <bob@example.org>"
    assert r.data["untrusted"] and "untrusted content" in r.output
    assert r.data["provenance"] == {
        "source": "email",
        "folder": "INBOX",
        "id": r.data["id"],
        "operation": "read",
        "from": "Jörg <bob@example.org>",
        "message_id": r.data["headers"]["Message-ID"],
    }


def test_read_prefers_plain_part(legs) -> None:
    r = legs.run("email.read", {"id": ids(legs)["Newsletter"]})
    assert r.data["body"] == "plain part" and r.data["attachments"] == []


def test_html_only_message_becomes_text(dovecot, dirs, mail_ca) -> None:
    html = (
        "<html><head><style>p{color:red}</style></head><body><script>steal()</script><h2>Offer</h2>"
        "<p>Click <a href='https://shop.example.com/x'>here</a></p><img src='https://t.example.com/px.gif'>"
        "</body></html>"
    )
    dovecot.deliver(message("HTML only", html=html, html_only=True))
    with make_legs(dirs, dovecot.settings(mail_ca["ca"])) as legs:
        body = legs.run("email.read", {"id": ids(legs)["HTML only"]}).data["body"]
    assert "## Offer" in body and "[here](https://shop.example.com/x)" in body
    assert "steal()" not in body and "color:red" not in body and "px.gif" not in body and "<p>" not in body


@pytest.mark.parametrize("plain", ["", "  \n\t \n", "\u00a0\n"])
def test_html_with_an_empty_plain_alternative_reads_the_html(dovecot, dirs, mail_ca, plain) -> None:
    # multipart/alternative whose text/plain part is empty or blank (as some mailers send it)
    html = "<html><body><h2>Quarterly numbers</h2><p>Revenue is <b>up 12%</b>.</p></body></html>"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ana@example.com", "bot@example.com", "Empty plain"
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
    msg.set_content(plain)
    msg.add_alternative(html, subtype="html")
    assert msg.get_content_type() == "multipart/alternative"
    dovecot.deliver(msg.as_bytes())
    with make_legs(dirs, dovecot.settings(mail_ca["ca"])) as legs:
        r = legs.run("email.read", {"id": ids(legs)["Empty plain"]})
    assert r.ok and "## Quarterly numbers" in r.data["body"] and "**up 12%**" in r.data["body"]
    assert "(no text body)" not in r.output and "Quarterly numbers" in r.output and "<p>" not in r.output


def test_attachments_listed_and_saved_with_safe_names(legs, dirs) -> None:
    uid = ids(legs)["With attachment"]
    r = legs.run("email.read", {"id": uid})
    (entry,) = r.data["attachments"]
    assert entry["size"] == 6 and entry["content_type"] == "application/octet-stream" and r.artifacts == []
    assert "saved" not in entry and not (dirs[0] / "attachments").exists()
    r = legs.run("email.read", {"id": uid, "save_attachments": True})
    (artifact,) = r.artifacts
    assert artifact.path == "attachments/evil name_.bin" and artifact.size == 6
    assert (dirs[0] / artifact.path).read_bytes() == b"\x00\x01data"
    again = legs.run("email.read", {"id": uid, "save_attachments": True})
    assert again.artifacts[0].path == "attachments/evil name_-1.bin"  # never overwrites


def test_attachment_policy_limits(dovecot, dirs, mail_ca) -> None:
    dovecot.deliver(message("Key", "see key", attachment=("server.pem", b"-----BEGIN PRIVATE KEY-----")))
    dovecot.deliver(message("Large", "see file", attachment=("large.bin", b"z" * 5000)))
    fwd = EmailMessage()
    fwd["From"], fwd["Subject"] = "ana@example.com", "Fwd"
    fwd.set_content("forwarding")
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "carl@example.com", "Inner"
    inner.set_content("inner text")
    fwd.add_attachment(inner)
    dovecot.deliver(fwd.as_bytes())
    with make_legs(dirs, dovecot.settings(mail_ca["ca"]), policy={"email": {"max_attachment_bytes": 4000}}) as legs:
        box = ids(legs)
        r = legs.run("email.read", {"id": box["Key"], "save_attachments": True})
        assert r.ok and r.artifacts == [] and "files.deny" in r.data["attachments"][0]["skipped"]
        assert "not saved" in r.output
        r = legs.run("email.read", {"id": box["Large"], "save_attachments": True})
        assert r.ok and r.artifacts == [] and "max_attachment_bytes" in r.data["attachments"][0]["skipped"]
        r = legs.run("email.read", {"id": box["Fwd"], "save_attachments": True})
        (artifact,) = r.artifacts
        assert artifact.path == "attachments/forwarded.eml" and b"inner text" in (dirs[0] / artifact.path).read_bytes()


def test_five_megabyte_message(legs) -> None:
    t = time.monotonic()
    r = legs.run("email.read", {"id": ids(legs)["Big one"]})
    assert r.ok and len(r.data["body"]) == BIG and not r.data["truncated"] and len(r.output) <= 20_100
    assert time.monotonic() - t < 10


def test_giant_message_is_cut_at_the_policy_bound(legs, dirs, mailbox, mail_ca) -> None:
    with make_legs(dirs, mailbox.settings(mail_ca["ca"]), policy={"email": {"max_attachment_bytes": 100_000}}) as small:
        r = small.run("email.read", {"id": ids(small)["Big one"], "save_attachments": True})
    assert r.ok and r.data["truncated"] and r.data["size"] > BIG
    assert 1_000_000 < len(r.data["body"]) <= 1_200_000 and "only the first" in r.output


def test_folders(dovecot, dirs, mail_ca) -> None:
    dovecot.deliver(message("Filed away", "old"), folder="Archive")
    dovecot.deliver(message("Draft", "wip"), folder=utf7_encode("Entwürfe"))
    with make_legs(dirs, dovecot.settings(mail_ca["ca"])) as legs:
        assert list(ids(legs, "Archive")) == ["Filed away"]
        draft = ids(legs, "Entwürfe")
        assert list(draft) == ["Draft"]
        assert legs.run("email.read", {"id": draft["Draft"], "folder": "Entwürfe"}).data["body"] == "wip"
        r = legs.run("email.list", {"folder": "Nope"})
        assert r.error.type == "not_found" and "INBOX" in r.error.hint and "Entwürfe" in r.error.hint
        assert r.data["folders"][0] == "INBOX" and "Archive" in r.data["folders"]


def test_utf7_round_trip() -> None:
    for name in ("INBOX", "Entwürfe", "A&B", "日本語", "~peter/mail/台北/日本語"):
        assert utf7_decode(utf7_encode(name)) == name
    assert utf7_encode("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"  # RFC 3501's example


def test_bad_ids(legs) -> None:
    assert legs.run("email.read", {"id": "999"}).error.type == "not_found"
    for bad in ("1:*", "1,2", "-1", "1 BODY[]"):
        assert legs.run("email.read", {"id": bad}).error.type == "invalid_input"


def test_reading_does_not_mark_seen(legs) -> None:
    before = legs.run("email.list", {"unread_only": True}).data["total"]
    legs.run("email.read", {"id": legs.run("email.list", {"limit": 1}).data["messages"][0]["id"]})
    assert legs.run("email.list", {"unread_only": True}).data["total"] == before


def test_starttls(dirs, mailbox, mail_ca) -> None:
    with make_legs(dirs, mailbox.settings(mail_ca["ca"], security="starttls")) as legs:
        r = legs.run("email.list", {"limit": 1})
    assert r.ok and r.data["total"] == 5


def test_wrong_password(dirs, mailbox, mail_ca) -> None:
    with make_legs(dirs, mailbox.settings(mail_ca["ca"], password="nope-nope")) as legs:
        r = legs.run("email.list", {})
    assert r.error.type == "failed" and "login failed" in r.error.message.lower() and not r.error.retryable
    assert "nope-nope" not in r.model_dump_json()


def test_untrusted_certificate(dirs, mailbox) -> None:
    with make_legs(dirs, mailbox.settings(None)) as legs:
        r = legs.run("email.list", {})
    assert r.error.type == "failed" and "certificate" in r.error.message and "ca_file" in r.error.hint


def test_server_down_is_unavailable(dirs) -> None:
    port = free_port()  # nobody listens there: connection refused
    with make_legs(dirs, {"host": "127.0.0.1", "port": port, "security": "tls"}) as legs:
        r = legs.run("email.list", {})
    assert r.error.type == "unavailable" and r.error.retryable


def test_hung_server_is_stopped_at_the_deadline(dirs, silent_server, mail_ca) -> None:
    settings = {
        "host": "127.0.0.1",
        "port": silent_server.port,
        "security": "tls",
        "ca_file": mail_ca["ca"],
        "username": "bot",
        "password": "{secret:SMTP_PASSWORD}",
        "timeout_s": 30,
    }
    with make_legs(dirs, settings, policy={"email": {"timeout_s": 1}}) as legs:
        t = time.monotonic()
        r = legs.run("email.list", {})
        done = time.monotonic()
        assert r.error.type == "timeout" and done - t < 3
        # The worker thread's socket was shut at the deadline, not after the 30 s socket timeout.
        deadline = time.monotonic() + 2
        while not silent_server.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert silent_server.closed and silent_server.closed[0] - done < 1.0


def test_imap_session_span(legs, captured_spans) -> None:
    legs.run("email.list", {})
    (span,) = captured_spans.by_name("imap session")
    assert span.parent.span_id == captured_spans.by_name("execute_tool email_list")[0].context.span_id
    assert span.attributes["agent_legs.email.operation"] == "list"
    assert PASSWORD not in repr([dict(s.attributes) for s in captured_spans.spans])


def test_a_dovecot_that_cannot_start_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The demo's and the tests' Dovecot launcher: a failed start names Dovecot's own reason and removes
    its temp dir (the demo prints the reason and carries on without an inbox)."""
    from agent_legs_demo.dovecot import DovecotUnavailable, start_dovecot

    def ours() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("agent-legs-dovecot-*"))

    before = ours()
    with pytest.raises(DovecotUnavailable) as info:
        start_dovecot("u", "p", tls=(str(tmp_path / "missing-cert.pem"), str(tmp_path / "missing-key.pem")))
    assert "missing-cert.pem" in str(info.value), info.value
    assert ours() <= before


def test_a_secret_cut_by_the_listing_columns_leaves_no_part(dovecot, dirs, mail_ca) -> None:
    # email.list shows 40 characters of the sender: a secret straddling that column is scrubbed first.
    token = "tok-Canary-7Q2w9ZkX4vLm"
    for k in (1, 6, len(token) - 1):
        dovecot.deliver(message(f"Leak {k}", sender=f"{'x' * (40 - k)}{token}@example.com"))
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        secrets={"SMTP_PASSWORD": PASSWORD, "TOKEN": token},
        settings={"email": {"imap": dovecot.settings(mail_ca["ca"])}},
    ) as legs:
        r = legs.run("email.list", {})
    assert r.ok and r.output.count("Leak ") == 3
    pieces = {token[i : i + 4] for i in range(len(token) - 3)}
    assert not [p for p in pieces if p in r.output], r.output
