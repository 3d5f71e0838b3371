"""The state store under faults: PostgreSQL stopped mid-run (``pg_ctl stop -m immediate``), then restarted.

Guarantees checked against a real PostgreSQL of the test's own and a real SMTP server:

* while the database is down, an action that needs it (a budgeted write, an email send, a queued
  approval) returns ``unavailable``, retryable, naming the store and libpq's reason; no traceback,
  nothing written, nothing sent;
* once it is back (same Legs, same pool: its dead connections are replaced), the calls work, the
  budget counts exactly the calls that ran (none of the outage), and the email is sent exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent_legs import Legs
from agent_legs_testing.mail import PASSWORD

POLICY = {
    "allow": ["files.*", "email.*"],
    "require_approval": [],
    "email": {"allow_recipients": ["*@example.com"]},
    "budgets": [{"actions": "files.write", "limit": 4, "per": "day"}],
}


def test_database_stopped_mid_run_is_unavailable_then_counts_and_sends_right(
    tmp_path: Path, private_postgres, smtp_server, mail_ca
) -> None:
    url = private_postgres.create_database()
    settings = {
        "state": {"url": url, "timeout_s": 1},
        "email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])},
    }
    ws = tmp_path / "ws"
    with Legs(
        workspace=ws, state_dir=tmp_path / "st", policy=POLICY, settings=settings, secrets={"SMTP_PASSWORD": PASSWORD}
    ) as legs:

        def write(name: str):
            return legs.run("files.write", {"path": name, "content": "x"})

        def send():
            return legs.run("email.send", {"to": ["ana@example.com"], "subject": "Q3", "body": "numbers"}, call_id="call-outage")

        assert write("1.txt").ok and write("2.txt").ok

        private_postgres.stop()
        down = [write("down.txt"), send()]
        for r in down:
            assert r.error is not None and r.error.type == "unavailable" and r.error.retryable, r
            assert f"PostgreSQL at 127.0.0.1:{private_postgres.port}" in r.error.message
            assert "Connection refused" in r.error.message or "connection" in r.error.message.lower()
            assert "Traceback" not in r.output and "pg-test" not in r.output  # no password either
        assert not (ws / "down.txt").exists() and smtp_server.messages == []  # nothing written, nothing sent
        assert legs.run("files.read", {"path": "1.txt"}).ok  # an action that needs no state keeps working

        private_postgres.start()
        assert write("3.txt").ok and write("4.txt").ok
        over = write("5.txt")
        assert over.error is not None and over.error.type == "budget_exceeded" and "4/4" in over.error.message
        first, again = send(), send()
        assert first.ok and not first.data["duplicate"], first
        assert again.ok and again.data["duplicate"]
        assert len(smtp_server.messages) == 1


def test_queued_approval_with_the_database_down_is_unavailable(tmp_path: Path, private_postgres) -> None:
    url = private_postgres.create_database()
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        approver="queue",
        policy={"allow": ["files.*"], "require_approval": ["files.write"]},
        settings={"state": {"url": url, "timeout_s": 1}},
    ) as legs:
        private_postgres.stop()
        r = legs.run("files.write", {"path": "a.txt", "content": "x"})
        assert r.error is not None and r.error.type == "unavailable", r  # not a silent rejection
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent_legs._cli",
                "--workspace",
                str(tmp_path / "w2"),
                "--state-dir",
                str(tmp_path / "s2"),
                "approvals",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "AGENT_LEGS_STATE__URL": url, "AGENT_LEGS_STATE__TIMEOUT_S": "1"},
        )
        assert cli.returncode == 1 and "unavailable" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
        assert "pg-test" not in cli.stderr  # the password is never printed
        assert not (tmp_path / "ws" / "a.txt").exists()
        private_postgres.start()
        assert legs.approvals.pending() == []  # the failed enqueue left nothing behind
