"""email.send against a real SMTP server (aiosmtpd, STARTTLS with a private CA, AUTH required).

The default policy applies (``require_approval = ["email.send"]``) with an approver that says yes,
as a real deployment would run.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agent_legs import Legs
from agent_legs_testing import free_port
from agent_legs_testing.mail import PASSWORD

POLICY = {
    "allow": ["email.*", "files.*"],
    "email": {"allow_recipients": ["*@example.com", "boss@partner.org"], "max_recipients": 4},
}


def approve(request) -> bool:
    return True


def make_legs(dirs, smtp: dict, *, policy=None, password=PASSWORD, **kw) -> Legs:
    ws, st = dirs
    return Legs(
        workspace=ws,
        state_dir=st,
        policy=policy or POLICY,
        secrets={"SMTP_PASSWORD": password},
        settings={"email": {"from_address": "bot@example.com", "smtp": smtp}, **kw.pop("settings", {})},
        approver=kw.pop("approver", approve),
        **kw,
    )


@pytest.fixture
def legs(dirs, smtp_server, mail_ca, captured_spans):
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"]), tracer_provider=captured_spans.provider) as legs:
        yield legs


def send(legs, call_id=None, **kw):
    args = {"to": ["ana@example.com"], "subject": "Report", "body": "Hello Ana,\nsee attached.\n", **kw}
    return legs.run("email.send", args, call_id=call_id)


def test_message_arrives_with_headers_body_and_attachment(legs, smtp_server, dirs) -> None:
    (dirs[0] / "report.csv").write_text("a,b\n1,2\n")
    r = send(legs, call_id="call_1", cc=["boss@partner.org"], bcc=["audit@example.com"], attachments=["report.csv"])
    assert r.ok, r.output
    (received,) = smtp_server.messages
    assert received["from"] == "bot@example.com"
    assert sorted(received["rcpt"]) == ["ana@example.com", "audit@example.com", "boss@partner.org"]
    msg = smtp_server.parsed()
    assert msg["From"] == "bot@example.com" and msg["To"] == "ana@example.com" and msg["Cc"] == "boss@partner.org"
    assert msg["Bcc"] is None and b"audit@" not in received["data"]  # bcc only in the envelope
    assert msg["Subject"] == "Report" and msg["Message-ID"] == r.data["message_id"] and msg["Date"]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Ana,\nsee attached.\n"
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "report.csv" and att.get_content_type() == "text/csv"
    assert att.get_payload(decode=True) == b"a,b\n1,2\n"
    assert r.data["recipients"] and r.data["refused"] == {} and r.data["response"].startswith("250")
    assert smtp_server.logins == 1


def test_unicode_subject_body_and_filename_travel_as_7bit(legs, smtp_server, dirs) -> None:
    (dirs[0] / "Übersicht €.txt").write_bytes("Grüße\n".encode())
    r = send(legs, subject="Grüße aus Köln ☕", body="Schöne Grüße — ünïcödé\n" + "x" * 2000, attachments=["Übersicht €.txt"])
    assert r.ok, r.output
    raw = smtp_server.messages[0]["data"]
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = smtp_server.parsed()
    assert msg["Subject"] == "Grüße aus Köln ☕"
    assert msg.get_body(("plain",)).get_content().startswith("Schöne Grüße — ünïcödé")
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "Übersicht €.txt" and att.get_payload(decode=True) == "Grüße\n".encode()


def test_html_with_plain_alternative(legs, smtp_server) -> None:
    assert send(legs, body="<h1>Hi</h1><p>See <b>this</b></p><img src='https://t.example.com/px.gif'>", html=True).ok
    msg = smtp_server.parsed()
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("html",)).get_content().startswith("<h1>Hi</h1>")
    plain = msg.get_body(("plain",)).get_content()
    assert "**this**" in plain and "# Hi" in plain and "px.gif" not in plain


# -- never twice ----------------------------------------------------------------------------------------
def test_never_sent_twice_for_the_same_call_id(legs, smtp_server) -> None:
    first = send(legs, call_id="call_dup")
    second = send(legs, call_id="call_dup")
    assert first.ok and second.ok and second.data["duplicate"] and "not sent again" in second.output
    assert len(smtp_server.messages) == 1 and second.data["message_id"] == first.data["message_id"]
    assert second.data["recipients"] == ["ana@example.com"]


def test_same_call_id_with_other_content_is_not_sent_and_says_so(legs, smtp_server) -> None:
    assert send(legs, call_id="call_x").ok
    r = send(legs, call_id="call_x", subject="Something else")
    assert r.ok and r.data["duplicate"] and r.data["content_differs"] and "NOT sent" in r.output
    assert len(smtp_server.messages) == 1


def test_identical_repeat_without_call_id_is_not_resent(legs, smtp_server) -> None:
    assert send(legs).ok and send(legs).data["duplicate"]
    assert len(smtp_server.messages) == 1
    assert send(legs, subject="Another").ok
    assert len(smtp_server.messages) == 2
    assert legs.run(
        "email.send",
        {"to": ["ana@example.com"], "subject": "Report", "body": "Hello Ana,\nsee attached.\n"},
        session="other-thread",
    ).ok
    assert len(smtp_server.messages) == 3  # same content, another session: another logical send


def test_concurrent_calls_with_one_call_id_send_once(legs, smtp_server) -> None:
    async def both():
        args = {"to": ["ana@example.com"], "subject": "Race", "body": "one"}
        return await asyncio.gather(*(legs.arun("email.send", args, call_id="call_race") for _ in range(3)))

    results = asyncio.run(both())
    assert all(r.ok for r in results) and sorted(r.data["duplicate"] for r in results) == [False, True, True]
    assert len(smtp_server.messages) == 1


def test_ledger_survives_restart(dirs, smtp_server, mail_ca) -> None:
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"])) as legs:
        assert send(legs, call_id="c-restart").ok
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"])) as legs:
        assert send(legs, call_id="c-restart").data["duplicate"]
    assert len(smtp_server.messages) == 1


def test_connection_lost_during_data_is_never_resent(legs, smtp_server) -> None:
    smtp_server.drop_in_data = True
    r = send(legs, call_id="call_lost")
    assert r.error.type == "failed" and not r.error.retryable and "may have been delivered" in r.error.message
    assert r.data["possibly_sent"] is True
    smtp_server.drop_in_data = False
    again = send(legs, call_id="call_lost")
    assert again.error.type == "failed" and "interrupted" in again.error.message and again.error.hint
    assert smtp_server.data_attempts == 1 and smtp_server.messages == []


CRASHING_SENDER = """
import json, sys
from agent_legs import Legs
cfg = json.loads(sys.argv[1])
with Legs(workspace=cfg["ws"], state_dir=cfg["st"], policy=cfg["policy"], secrets={"SMTP_PASSWORD": cfg["pw"]},
          settings={"email": {"from_address": "bot@example.com", "smtp": cfg["smtp"]}}, approver=lambda r: True) as legs:
    legs.run("email.send", {"to": ["ana@example.com"], "subject": "Report", "body": "Hello"}, call_id="call_crash")
"""


def test_process_killed_mid_send_is_reported_not_resent(dirs, smtp_server, mail_ca) -> None:
    import json
    import subprocess
    import sys

    smtp_server.hang_in_data = True  # the message content arrives, the reply does not
    cfg = {"ws": str(dirs[0]), "st": str(dirs[1]), "policy": POLICY, "pw": PASSWORD, "smtp": smtp_server.settings(mail_ca["ca"])}
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_SENDER, json.dumps(cfg)])
    try:
        deadline = time.monotonic() + 30
        while smtp_server.data_attempts == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert smtp_server.data_attempts == 1, "the sender never reached DATA"
    finally:
        proc.kill()  # the crash: no cleanup, no ledger update
        proc.wait(10)
    smtp_server.hang_in_data = False
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"])) as legs:
        r = legs.run("email.send", {"to": ["ana@example.com"], "subject": "Report", "body": "Hello"}, call_id="call_crash")
    assert r.error.type == "failed" and r.data["possibly_sent"] and "may have been delivered" in r.error.message
    assert smtp_server.data_attempts == 1


def test_identical_content_is_a_new_send_after_the_window(legs, smtp_server, monkeypatch) -> None:
    import agent_legs.actions.email._ledger as ledger

    first = send(legs)
    monkeypatch.setattr(ledger, "_CONTENT_DEDUPE_WINDOW_S", 0)
    second = send(legs)
    assert first.ok and second.ok and not second.data["duplicate"] and len(smtp_server.messages) == 2
    assert first.data["message_id"] != second.data["message_id"]  # receivers would drop a reused one


def test_timeout_before_data_releases_the_claim(dirs, smtp_server, silent_server, mail_ca) -> None:
    hung = {**smtp_server.settings(mail_ca["ca"]), "port": silent_server.port}
    policy = {**POLICY, "email": {**POLICY["email"], "timeout_s": 1}}
    with make_legs(dirs, hung, policy=policy) as legs:
        r = send(legs, call_id="call_hang")
        done = time.monotonic()
    assert r.error.type == "timeout"
    # Cancellation really stopped the work: the connection was closed at the deadline.
    assert silent_server.accepted == 1 and silent_server.closed and silent_server.closed[0] - done < 1.0
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"])) as legs:  # nothing was sent: the retry sends
        r = send(legs, call_id="call_hang")
    assert r.ok and not r.data["duplicate"] and len(smtp_server.messages) == 1


# -- server answers -------------------------------------------------------------------------------------
def test_transient_451_then_accepted_is_sent_once(legs, smtp_server) -> None:
    smtp_server.replies = ["451 4.3.0 Try again later", None]
    r = send(legs)
    assert r.ok and len(smtp_server.messages) == 1 and smtp_server.data_attempts == 2
    assert r.data["message_id"] == smtp_server.parsed()["Message-ID"]


def test_persistent_451_fails_retryable(dirs, smtp_server, mail_ca) -> None:
    smtp_server.replies = ["451 4.3.0 Try again later"] * 10
    policy = {**POLICY, "email": {**POLICY["email"], "timeout_s": 3}}
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"]), policy=policy) as legs:
        r = send(legs, call_id="call_451")
        assert r.error.type == "failed" and r.error.retryable and "451" in r.error.message
        attempts = smtp_server.data_attempts
        assert attempts >= 2 and smtp_server.messages == []
        smtp_server.replies = []
        assert send(legs, call_id="call_451").ok  # a refusal does not poison the ledger
    assert len(smtp_server.messages) == 1


def test_persistent_451_is_tried_at_most_four_times_one_span_each(dirs, smtp_server, mail_ca, captured_spans) -> None:
    # Time to spare (30 s against 4.2 s of back-off): the attempt bound ends it, not the deadline.
    smtp = {**smtp_server.settings(mail_ca["ca"]), "timeout_s": 30}
    smtp_server.replies = ["451 4.3.0 Try again later"] * 10
    with make_legs(dirs, smtp, tracer_provider=captured_spans.provider) as legs:
        r = send(legs)
    assert r.error.type == "failed" and r.error.retryable and "451" in r.error.message
    assert smtp_server.data_attempts == 4 and smtp_server.messages == []
    attempts = sorted(s.attributes["agent_legs.email.attempt"] for s in captured_spans.by_name("smtp send"))
    assert attempts == [1, 2, 3, 4]


def test_permanent_550_fails_not_retryable(legs, smtp_server) -> None:
    smtp_server.replies = ["550 5.7.1 Rejected by policy"]
    r = send(legs)
    assert r.error.type == "failed" and not r.error.retryable and "550" in r.error.message
    assert smtp_server.messages == [] and smtp_server.data_attempts == 1
    assert send(legs).ok  # a refusal does not poison the ledger


def test_partially_refused_recipients_are_reported_by_address(legs, smtp_server) -> None:
    smtp_server.refuse = {"gone@example.com": "550 5.1.1 No such user"}
    r = send(legs, to=["ana@example.com", "gone@example.com"])
    assert r.ok and r.data["recipients"] == ["ana@example.com"]
    assert r.data["refused"] == {"gone@example.com": "550 5.1.1 No such user"} and "gone@example.com" in r.output
    assert smtp_server.messages[0]["rcpt"] == ["ana@example.com"]


def test_every_recipient_refused_fails(legs, smtp_server) -> None:
    smtp_server.refuse = {"gone@example.com": "550 5.1.1 No such user"}
    r = send(legs, to=["gone@example.com"])
    assert r.error.type == "failed" and not r.error.retryable and "gone@example.com" in r.error.message
    assert smtp_server.data_attempts == 0


def test_wrong_password_is_a_clear_error(dirs, smtp_server, mail_ca) -> None:
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"]), password="wrong-password") as legs:
        r = send(legs)
    assert r.error.type == "failed" and "authentication failed" in r.error.message and not r.error.retryable
    assert "settings.email.smtp" in r.error.hint and smtp_server.logins == 1  # one try, no mechanism cycling
    assert "wrong-password" not in r.model_dump_json() and smtp_server.messages == []


def test_server_down_is_unavailable(dirs, mail_ca) -> None:
    port = free_port()  # nobody listens there: connection refused
    policy = {**POLICY, "email": {**POLICY["email"], "timeout_s": 3}}
    with make_legs(dirs, {"host": "127.0.0.1", "port": port, "ca_file": mail_ca["ca"]}, policy=policy) as legs:
        t = time.monotonic()
        r = send(legs)
    assert r.error.type == "unavailable" and r.error.retryable and "attempts" in r.error.message
    assert time.monotonic() - t < 3  # retried with backoff, gave up within the deadline


def test_untrusted_tls_is_refused(dirs, smtp_server) -> None:
    with make_legs(dirs, smtp_server.settings(ca_file=None)) as legs:  # the private CA is not trusted
        r = send(legs)
    assert r.error.type == "failed" and "certificate" in r.error.message and "ca_file" in r.error.hint
    assert smtp_server.messages == []


def test_sender_with_display_name(dirs, smtp_server, mail_ca) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=POLICY,
        secrets={"SMTP_PASSWORD": PASSWORD},
        approver=approve,
        settings={"email": {"from_address": "Report Bot <Bot@Example.com>", "smtp": smtp_server.settings(mail_ca["ca"])}},
    ) as legs:
        assert send(legs).ok
    assert smtp_server.messages[0]["from"] == "Bot@example.com"
    assert smtp_server.parsed()["From"] == "Report Bot <Bot@example.com>"


def test_bad_sender_setting(dirs, smtp_server, mail_ca) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=POLICY,
        secrets={"SMTP_PASSWORD": PASSWORD},
        approver=approve,
        settings={"email": {"smtp": smtp_server.settings(mail_ca["ca"])}},
    ) as legs:  # username "bot"
        r = send(legs)
    assert r.error.type == "failed" and "from_address" in r.error.hint and smtp_server.logins == 0


def test_plaintext_only_to_loopback(dirs) -> None:
    # Denied before any connection is attempted: no traffic leaves the machine.
    with make_legs(dirs, {"host": "smtp.example.com", "port": 25, "security": "none"}) as legs:
        r = send(legs)
    assert r.error.type == "denied" and "settings.email.smtp.security" in r.error.message


# -- what may be sent, to whom ----------------------------------------------------------------------------
INJECTIONS = [
    {"subject": "Hi\r\nBcc: evil@attacker.com"},
    {"subject": "Hi\nX-Injected: 1"},
    {"subject": "Hi\rX-Injected: 1"},
    {"subject": "Hi\x00"},
    {"subject": "Hi\x85Bcc: evil@attacker.com"},
    {"subject": "Hi\u2028Bcc: evil@attacker.com"},
    {"subject": "Invoice \u202eexe.pdf"},
    {"to": ["ana@example.com\r\nBcc: evil@attacker.com"]},
    {"to": ["ana@example.com\nevil@attacker.com"]},
    {"to": ["ana@example.com, evil@attacker.com"]},
    {"to": ['"ana@example.com" <evil@attacker.com>']},
    {"to": ['"bank@example.com" <ana@example.com>']},
    {"to": ["Ana <ana@example.com>"]},
    {"to": ["<ana@example.com>"]},
    {"to": ["evil@attacker.com (ana@example.com)"]},
    {"to": ["ana(comment)@example.com"]},
    {"to": ["=?utf-8?q?ana=40example.com?= <evil@attacker.com>"]},
    {"to": ["=?utf-8?b?ZXZpbEBhdHRhY2tlci5jb20=?=@example.com"]},
    {"to": ["ana@example.com@attacker.com"]},
    {"to": ["ana%attacker.com@example.com"]},
    {"to": ["attacker.com!ana@example.com"]},
    {"to": ["ana?@example.com"]},
    {"to": ['"ana@example.com"@attacker.com']},
    {"to": ["ana"]},
    {"to": ["@example.com"]},
    {"to": ["ana@"]},
    {"to": ["ana@example..com"]},
    {"to": ["ana..b@example.com"]},
    {"to": [".ana@example.com"]},
    {"to": ["ana@-example.com"]},
    {"to": ["ana@[127.0.0.1]"]},
    {"to": ["ana@exаmple.com"]},  # Cyrillic "а": an IDN homograph
    {"to": ["anä@example.com"]},
    {"to": ["ana@example.com\u200b"]},
    {"cc": ["undisclosed-recipients:;"]},
    {"cc": ["team: ana@example.com, evil@attacker.com;"]},
    {"bcc": ["ana@example.com;evil@attacker.com"]},
    {"bcc": ["ana@example.com\tevil@attacker.com"]},
]
DENIED = [
    ({"to": ["evil@attacker.com"]}, "policy.email.allow_recipients"),
    ({"to": ["ana@example.com.attacker.com"]}, "policy.email.allow_recipients"),
    ({"to": ["ana@sub.example.com"]}, "policy.email.allow_recipients"),
    ({"to": ["ana@xn--exmple-4nf.com"]}, "policy.email.allow_recipients"),  # punycode: only if listed
    ({"cc": ["boss@partner.org.evil"]}, "policy.email.allow_recipients"),
    ({"cc": ["other@partner.org"]}, "policy.email.allow_recipients"),
    ({"bcc": ["evil@attacker.com"]}, "policy.email.allow_recipients"),
    ({"to": ["ana@example.com"], "bcc": ["evil@attacker.com"]}, "policy.email.allow_recipients"),
    (
        {"to": ["ANA@EXAMPLE.COM", "b@example.com", "c@example.com", "d@example.com", "e@example.com"]},
        "policy.email.max_recipients",
    ),
]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_header_injection_and_address_tricks_are_invalid(legs, smtp_server, bad) -> None:
    r = send(legs, **bad)
    assert r.error.type == "invalid_input", r.output
    assert smtp_server.messages == [] and smtp_server.data_attempts == 0 and smtp_server.logins == 0


@pytest.mark.parametrize(("bad", "rule"), DENIED)
def test_recipients_outside_policy_are_denied(legs, smtp_server, bad, rule) -> None:
    r = send(legs, **bad)
    assert r.error.type == "denied" and rule in r.error.message
    offender = [a for a in bad.get("to", []) + bad.get("cc", []) + bad.get("bcc", []) if "attacker" in a]
    if offender and rule.endswith("allow_recipients"):
        assert offender[0] in r.error.message
    assert smtp_server.messages == [] and smtp_server.logins == 0


def test_recipient_match_is_case_insensitive(legs, smtp_server) -> None:
    r = send(legs, to=["Ana@Example.COM"], cc=["BOSS@PARTNER.ORG"])
    assert r.ok and sorted(smtp_server.messages[0]["rcpt"]) == ["Ana@example.com", "BOSS@partner.org"]


def test_nobody_is_allowed_by_default(dirs, smtp_server, mail_ca) -> None:
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"]), policy={"allow": ["email.*"]}) as legs:
        r = send(legs)
    assert r.error.type == "denied" and "empty: nobody" in r.error.message


def test_attachment_rules(dirs, smtp_server, mail_ca) -> None:
    policy = {**POLICY, "email": {**POLICY["email"], "max_attachment_bytes": 1000}}
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"]), policy=policy) as legs:
        assert send(legs, attachments=["../etc/passwd"]).error.type == "denied"
        assert send(legs, attachments=["/etc/passwd"]).error.type in ("denied", "invalid_input")
        assert send(legs, attachments=["missing.txt"]).error.type == "not_found"
        (dirs[0] / ".env").write_text("SECRET=1")
        assert send(legs, attachments=[".env"]).error.type == "denied"
        (dirs[0] / "Key.PEM").write_text("-----BEGIN")  # deny globs ignore case (issue 13.7)
        assert send(legs, attachments=["Key.PEM"]).error.type == "denied"
        (dirs[0] / "big.bin").write_bytes(b"x" * 1001)
        r = send(legs, attachments=["big.bin"])
        assert r.error.type == "invalid_input" and "max_attachment_bytes" in r.error.message
        (dirs[0] / "a.bin").write_bytes(b"x" * 600)
        (dirs[0] / "b.bin").write_bytes(b"x" * 600)
        r = send(legs, attachments=["a.bin", "b.bin"])
        assert r.error.type == "invalid_input" and "total" in r.error.message
    assert smtp_server.messages == []


# -- approval and telemetry ---------------------------------------------------------------------------------
def test_approval_is_the_default_policy(dirs, smtp_server, mail_ca) -> None:
    seen = []
    policy = {"email": {"allow_recipients": ["*@example.com"]}}  # default allow/require_approval lists
    with make_legs(
        dirs, smtp_server.settings(mail_ca["ca"]), policy=policy, approver=lambda req: seen.append(req) or False
    ) as legs:
        r = send(legs, bcc=["audit@example.com"])
    assert r.error.type == "approval_denied" and smtp_server.messages == [] and smtp_server.logins == 0
    reason = seen[0].reason
    assert "ana@example.com" in reason and "bcc audit@example.com" in reason and "Report" in reason
    assert "Hello Ana" in reason and "see attached" in reason


def test_approved_send_goes_out(dirs, smtp_server, mail_ca) -> None:
    seen = []
    policy = {"email": {"allow_recipients": ["*@example.com"]}}
    with make_legs(
        dirs, smtp_server.settings(mail_ca["ca"]), policy=policy, approver=lambda req: seen.append(req) or True
    ) as legs:
        assert send(legs).ok
    assert len(seen) == 1 and len(smtp_server.messages) == 1


def test_no_password_or_body_in_spans_without_capture(dirs, smtp_server, mail_ca, captured_spans) -> None:
    with make_legs(
        dirs,
        smtp_server.settings(mail_ca["ca"]),
        settings={"telemetry": {"capture_content": False}},
        tracer_provider=captured_spans.provider,
    ) as legs:
        assert send(legs, body="very private words").ok
    blob = repr([(dict(s.attributes), [dict(e.attributes or {}) for e in s.events]) for s in captured_spans.spans])
    assert PASSWORD not in blob and "very private words" not in blob
    (smtp_span,) = captured_spans.by_name("smtp send")
    tool_span = captured_spans.by_name("execute_tool email_send")[0]
    assert smtp_span.parent.span_id == tool_span.context.span_id
    assert smtp_span.attributes["server.address"] == "127.0.0.1"
    assert tool_span.attributes["agent_legs.email.message_id"].startswith("<agent-legs.")


def test_password_never_in_results_spans_or_log(dirs, smtp_server, mail_ca, captured_spans, read_log) -> None:
    smtp_server.replies = ["550 5.7.1 Rejected"]
    with make_legs(dirs, smtp_server.settings(mail_ca["ca"]), tracer_provider=captured_spans.provider) as legs:
        r = send(legs)
    blob = r.model_dump_json() + repr([dict(s.attributes) for s in captured_spans.spans]) + repr(read_log())
    assert PASSWORD not in blob
