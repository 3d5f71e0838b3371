"""email.list / email.read against a real Dovecot IMAP server (TLS with a private CA)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from agent_legs import Legs
from agent_legs_testing.mail import PASSWORD


def message(subject: str, body: str = "hello", sender: str = "ana@example.com", html: str | None = None,
            attachment: tuple[str, bytes] | None = None, date: str = "Mon, 02 Nov 2026 10:00:00 +0000") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "bot@example.com"
    msg["Subject"] = subject
    msg["Date"] = date
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return msg.as_bytes()


@pytest.fixture
def mailbox(dovecot):
    dovecot.deliver(message("Invoice 42", "Please pay 100 EUR", date="Mon, 02 Nov 2026 10:00:00 +0000"), seen=True)
    dovecot.deliver(message("Grüße aus Köln ☕", "Unicode body: ünïcödé", sender="bob@example.org",
                            date="Tue, 03 Nov 2026 10:00:00 +0000"))
    dovecot.deliver(message("Newsletter", "plain part", html="<h1>News</h1><p>Big <b>sale</b></p>",
                            date="Wed, 04 Nov 2026 10:00:00 +0000"))
    dovecot.deliver(message("With attachment", "see file", attachment=("../../etc/evil name?.bin", b"\x00\x01data"),
                            date="Thu, 05 Nov 2026 10:00:00 +0000"))
    dovecot.deliver(message("Big one", "x" * (5 * 1024 * 1024), date="Fri, 06 Nov 2026 10:00:00 +0000"))
    return dovecot


@pytest.fixture
def legs(dirs, mailbox, mail_ca, captured_spans):
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, secrets={"SMTP_PASSWORD": PASSWORD},
              settings={"email": {"imap": mailbox.settings(mail_ca["ca"])}},
              tracer_provider=captured_spans.provider) as legs:
        yield legs


def test_list_newest_first(legs) -> None:
    r = legs.run("email.list", {})
    assert r.ok and r.data["total"] == 5 and r.data["untrusted"] is True
    subjects = [m["subject"] for m in r.data["messages"]]
    assert subjects[0] == "Big one" and subjects[-1] == "Invoice 42"
    assert "Grüße aus Köln ☕" in subjects
    assert [m["seen"] for m in r.data["messages"]][-1] is True


def test_list_limit_and_filters(legs) -> None:
    r = legs.run("email.list", {"limit": 2})
    assert len(r.data["messages"]) == 2 and r.data["total"] == 5 and "showing the newest 2" in r.output
    assert [m["subject"] for m in legs.run("email.list", {"query": "from:bob@example.org"}).data["messages"]] == \
        ["Grüße aus Köln ☕"]
    assert [m["subject"] for m in legs.run("email.list", {"query": 'subject:"Invoice"'}).data["messages"]] == \
        ["Invoice 42"]
    assert legs.run("email.list", {"unread_only": True}).data["total"] == 4
    assert legs.run("email.list", {"query": "since:2026-11-05"}).data["total"] == 2
    assert legs.run("email.list", {"query": "text:sale"}).data["total"] == 1
    r = legs.run("email.list", {"query": "color:red"})
    assert r.error.type == "invalid_input"
    r = legs.run("email.list", {"query": 'subject:"x\r\nA1 LOGOUT"'})
    assert r.error.type == "invalid_input"


def test_read_plain_unicode_and_untrusted(legs) -> None:
    ids = {m["subject"]: m["id"] for m in legs.run("email.list", {}).data["messages"]}
    r = legs.run("email.read", {"id": ids["Grüße aus Köln ☕"]})
    assert r.ok and r.data["headers"]["Subject"] == "Grüße aus Köln ☕" and "ünïcödé" in r.data["body"]
    assert r.data["untrusted"] and r.data["provenance"]["source"] == "email" and "untrusted content" in r.output


def test_read_prefers_plain_part(legs) -> None:
    ids = {m["subject"]: m["id"] for m in legs.run("email.list", {}).data["messages"]}
    r = legs.run("email.read", {"id": ids["Newsletter"]})
    assert r.data["body"] == "plain part"


def test_attachments_listed_and_saved_with_safe_names(legs, dirs) -> None:
    ids = {m["subject"]: m["id"] for m in legs.run("email.list", {}).data["messages"]}
    r = legs.run("email.read", {"id": ids["With attachment"]})
    assert r.data["attachments"][0]["size"] == 6 and r.artifacts == []
    r = legs.run("email.read", {"id": ids["With attachment"], "save_attachments": True})
    (artifact,) = r.artifacts
    assert artifact.path.startswith("attachments/") and ".." not in artifact.path and "?" not in artifact.path
    assert (dirs[0] / artifact.path).read_bytes() == b"\x00\x01data"


def test_five_megabyte_message(legs) -> None:
    ids = {m["subject"]: m["id"] for m in legs.run("email.list", {}).data["messages"]}
    r = legs.run("email.read", {"id": ids["Big one"]})
    assert r.ok and len(r.data["body"]) == 5 * 1024 * 1024 and len(r.output) <= 20_100


def test_bad_ids_and_folders(legs) -> None:
    assert legs.run("email.read", {"id": "999"}).error.type == "not_found"
    assert legs.run("email.read", {"id": "1:*"}).error.type == "invalid_input"
    assert legs.run("email.list", {"folder": "Nope"}).error.type in ("not_found", "failed")


def test_reading_does_not_mark_seen(legs) -> None:
    before = legs.run("email.list", {"unread_only": True}).data["total"]
    legs.run("email.read", {"id": legs.run("email.list", {"limit": 1}).data["messages"][0]["id"]})
    assert legs.run("email.list", {"unread_only": True}).data["total"] == before


def test_wrong_password(dirs, mailbox, mail_ca) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, secrets={"SMTP_PASSWORD": "nope-nope"},
              settings={"email": {"imap": mailbox.settings(mail_ca["ca"])}}) as legs:
        r = legs.run("email.list", {})
    assert r.error.type == "failed" and "login failed" in r.error.message.lower()


def test_imap_session_span(legs, captured_spans) -> None:
    legs.run("email.list", {})
    (span,) = captured_spans.by_name("imap session")
    assert span.parent.span_id == captured_spans.by_name("execute_tool email_list")[0].context.span_id
