"""email.send against a real SMTP server (aiosmtpd, STARTTLS with a private CA, AUTH required)."""

from __future__ import annotations

import pytest

from agent_legs import Legs
from agent_legs_testing.mail import PASSWORD

POLICY = {"allow": ["email.*", "files.*"], "require_approval": [],
          "email": {"allow_recipients": ["*@example.com", "boss@partner.org"], "max_recipients": 4}}


@pytest.fixture
def legs(dirs, smtp_server, mail_ca, captured_spans):
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, secrets={"SMTP_PASSWORD": PASSWORD},
              settings={"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])}},
              tracer_provider=captured_spans.provider) as legs:
        yield legs


def send(legs, call_id=None, **kw):
    args = {"to": ["ana@example.com"], "subject": "Report", "body": "Hello Ana,\nsee attached.\n", **kw}
    return legs.run("email.send", args, call_id=call_id)


def test_message_arrives_with_headers_body_and_attachment(legs, smtp_server, dirs) -> None:
    (dirs[0] / "report.csv").write_text("a,b\n1,2\n")
    r = send(legs, call_id="call_1", cc=["boss@partner.org"], bcc=["audit@example.com"], attachments=["report.csv"])
    assert r.ok, r.output
    (received,) = smtp_server.messages
    assert sorted(received["rcpt"]) == ["ana@example.com", "audit@example.com", "boss@partner.org"]
    msg = smtp_server.parsed()
    assert msg["From"] == "bot@example.com" and msg["To"] == "ana@example.com" and msg["Cc"] == "boss@partner.org"
    assert msg["Bcc"] is None and msg["Subject"] == "Report" and msg["Message-ID"] == r.data["message_id"]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Ana,\nsee attached.\n"
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "report.csv" and att.get_content_type() == "text/csv"
    assert att.get_payload(decode=True) == b"a,b\n1,2\n"


def test_html_with_plain_alternative(legs, smtp_server) -> None:
    assert send(legs, body="<h1>Hi</h1><p>See <b>this</b></p>", html=True).ok
    msg = smtp_server.parsed()
    assert msg.get_body(("html",)).get_content().startswith("<h1>Hi</h1>")
    assert "**this**" in msg.get_body(("plain",)).get_content()


def test_never_sent_twice_for_the_same_call_id(legs, smtp_server) -> None:
    first = send(legs, call_id="call_dup")
    second = send(legs, call_id="call_dup")
    assert first.ok and second.ok and second.data["duplicate"] and "not sent again" in second.output
    assert len(smtp_server.messages) == 1 and second.data["message_id"] == first.data["message_id"]


def test_identical_repeat_without_call_id_is_not_resent(legs, smtp_server) -> None:
    assert send(legs).ok and send(legs).data["duplicate"]
    assert len(smtp_server.messages) == 1
    assert send(legs, subject="Another").ok
    assert len(smtp_server.messages) == 2


def test_ledger_survives_restart(dirs, smtp_server, mail_ca) -> None:
    ws, st = dirs
    cfg = dict(workspace=ws, state_dir=st, policy=POLICY, secrets={"SMTP_PASSWORD": PASSWORD},
               settings={"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])}})
    with Legs(**cfg) as legs:
        assert send(legs, call_id="c-restart").ok
    with Legs(**cfg) as legs:
        assert send(legs, call_id="c-restart").data["duplicate"]
    assert len(smtp_server.messages) == 1


def test_transient_451_then_accepted_is_sent_once(legs, smtp_server) -> None:
    smtp_server.replies = ["451 4.3.0 Try again later", None]
    r = send(legs)
    assert r.ok and len(smtp_server.messages) == 1 and smtp_server.data_attempts == 2


def test_permanent_550_fails_not_retryable(legs, smtp_server) -> None:
    smtp_server.replies = ["550 5.7.1 Rejected by policy"]
    r = send(legs)
    assert r.error.type == "failed" and not r.error.retryable and "550" in r.error.message
    assert smtp_server.messages == [] and smtp_server.data_attempts == 1
    assert send(legs).ok  # a refusal does not poison the ledger


def test_wrong_password_is_a_clear_error(dirs, smtp_server, mail_ca) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, secrets={"SMTP_PASSWORD": "wrong-password"},
              settings={"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])}}) as legs:
        r = send(legs)
    assert r.error.type == "failed" and "authentication failed" in r.error.message and not r.error.retryable
    assert "wrong-password" not in r.model_dump_json()


def test_server_down_is_unavailable(dirs, mail_ca) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={**POLICY, "email": {**POLICY["email"], "timeout_s": 3}},
              secrets={"SMTP_PASSWORD": PASSWORD},
              settings={"email": {"from_address": "bot@example.com",
                                  "smtp": {"host": "127.0.0.1", "port": port, "ca_file": mail_ca["ca"]}}}) as legs:
        r = send(legs)
    assert r.error.type == "unavailable" and r.error.retryable


def test_untrusted_tls_is_refused(dirs, smtp_server) -> None:
    ws, st = dirs
    settings = smtp_server.settings(ca_file=None)  # the private CA is not trusted
    with Legs(workspace=ws, state_dir=st, policy=POLICY, secrets={"SMTP_PASSWORD": PASSWORD},
              settings={"email": {"from_address": "bot@example.com", "smtp": settings}}) as legs:
        r = send(legs)
    assert not r.ok and smtp_server.messages == []


INJECTIONS = [
    {"subject": "Hi\r\nBcc: evil@attacker.com"},
    {"subject": "Hi\nX-Injected: 1"},
    {"subject": "Hi\x00"},
    {"to": ["ana@example.com\r\nBcc: evil@attacker.com"]},
    {"to": ["ana@example.com, evil@attacker.com"]},
    {"to": ['"ana@example.com" <evil@attacker.com>']},
    {"to": ["Ana <ana@example.com>"]},
    {"to": ["evil@attacker.com (ana@example.com)"]},
    {"to": ["=?utf-8?q?ana=40example.com?= <evil@attacker.com>"]},
    {"to": ["ana@example.com@attacker.com"]},
    {"to": ["ana"]},
    {"to": ["ana@example..com"]},
    {"cc": ["undisclosed-recipients:;"]},
    {"bcc": ["ana@example.com;evil@attacker.com"]},
]
DENIED = [
    ({"to": ["evil@attacker.com"]}, "policy.email.allow_recipients"),
    ({"to": ["ana@example.com.attacker.com"]}, "policy.email.allow_recipients"),
    ({"cc": ["boss@partner.org.evil"]}, "policy.email.allow_recipients"),
    ({"bcc": ["evil@attacker.com"]}, "policy.email.allow_recipients"),
    ({"to": ["ANA@EXAMPLE.COM", "b@example.com", "c@example.com", "d@example.com", "e@example.com"]},
     "policy.email.max_recipients"),
]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_header_injection_and_address_tricks_are_invalid(legs, smtp_server, bad) -> None:
    r = send(legs, **bad)
    assert r.error.type == "invalid_input", r.output
    assert smtp_server.messages == [] and smtp_server.data_attempts == 0


@pytest.mark.parametrize(("bad", "rule"), DENIED)
def test_recipients_outside_policy_are_denied(legs, smtp_server, bad, rule) -> None:
    r = send(legs, **bad)
    assert r.error.type == "denied" and rule in r.error.message
    assert smtp_server.messages == []


def test_attachment_rules(legs, smtp_server, dirs) -> None:
    assert send(legs, attachments=["../etc/passwd"]).error.type == "denied"
    assert send(legs, attachments=["missing.txt"]).error.type == "not_found"
    (dirs[0] / ".env").write_text("SECRET=1")
    assert send(legs, attachments=[".env"]).error.type == "denied"
    assert smtp_server.messages == []


def test_approval_is_the_default_policy(dirs, smtp_server, mail_ca) -> None:
    ws, st = dirs
    seen = []
    settings = {"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])}}
    policy = {"email": {"allow_recipients": ["*@example.com"]}}  # default allow/require_approval lists
    with Legs(workspace=ws, state_dir=st, policy=policy, settings=settings, secrets={"SMTP_PASSWORD": PASSWORD},
              approver=lambda req: seen.append(req) or False) as legs:
        r = send(legs)
    assert r.error.type == "approval_denied" and smtp_server.messages == []
    assert "ana@example.com" in seen[0].reason and "Report" in seen[0].reason and "Hello Ana" in seen[0].reason


def test_no_password_or_body_in_spans_without_capture(dirs, smtp_server, mail_ca, captured_spans) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, secrets={"SMTP_PASSWORD": PASSWORD},
              settings={"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])},
                        "telemetry": {"capture_content": False}},
              tracer_provider=captured_spans.provider) as legs:
        assert send(legs, body="very private words").ok
    blob = repr([dict(s.attributes) for s in captured_spans.spans])
    assert PASSWORD not in blob and "very private words" not in blob
    (smtp_span,) = captured_spans.by_name("smtp send")
    assert smtp_span.parent.span_id == captured_spans.by_name("execute_tool email_send")[0].context.span_id
