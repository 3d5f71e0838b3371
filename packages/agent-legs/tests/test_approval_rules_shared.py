"""Standing approval rules and the decided-call ledger in the state store (issue 19 item 1).

Two ``Legs`` on separate state directories share only a real PostgreSQL: a standing rule added in
one applies (and is revoked, and ends with the session) in the other; one ``(session, call id)``
decision given to both runs once. The older per-directory ``approval-rules.sqlite3`` is imported once
(both backends). A store that is down: a call needing a standing-rule lookup or a claim is
``unavailable`` naming the store, and nothing runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from agent_legs import Legs

POLICY = {"allow": ["files.*"], "require_approval": ["files.write"]}


def _legs(tmp_path: Path, name: str, url: str | None, approver: Any = None, **state: Any) -> Legs:
    settings = {"state": {"url": url, **state}} if url else {}
    return Legs(
        workspace=tmp_path / f"ws-{name}", state_dir=tmp_path / f"st-{name}", policy=POLICY, settings=settings, approver=approver
    )


def _never(req: Any) -> bool:
    raise AssertionError(f"asked for {req.arguments}: the standing rule should have applied")


def test_a_standing_rule_added_on_one_worker_applies_on_another(tmp_path: Path, postgres_url: str) -> None:
    asked: list[str] = []

    def approver(req: Any) -> Any:
        asked.append(req.arguments["path"])
        return {"type": "approve", "by": "erin", "remember": "session", "match": {"path": ["notes/*"]}}

    with _legs(tmp_path, "a", postgres_url, approver) as a, _legs(tmp_path, "b", postgres_url, _never) as b:
        assert a.run("files.write", {"path": "notes/1.txt", "content": "1"}, session="s").ok
        (rule,) = b.standing_rules("s")
        assert rule.by == "erin" and rule.match == {"path": ["notes/*"]}
        assert b.run("files.write", {"path": "notes/2.txt", "content": "2"}, session="s").ok  # not asked
        assert b.approval_request("files.write", {"path": "notes/3.txt", "content": "3"}, session="s") is None
        always = b.add_standing_rule("files.write", {"path": ["ok/*"]}, scope="always", by="frank")
        assert a.approval_request("files.write", {"path": "ok/x.txt", "content": "x"}, session="other") is None
        assert a.revoke_standing_rule(always.id) and not b.revoke_standing_rule(always.id)
        assert b.approval_request("files.write", {"path": "ok/x.txt", "content": "x"}, session="other") is not None
        a.close_session("s")  # a session rule ends with the session, for every worker
        assert b.standing_rules() == []
        assert b.approval_request("files.write", {"path": "notes/4.txt", "content": "4"}, session="s") is not None
    assert asked == ["notes/1.txt"]
    assert (tmp_path / "ws-b" / "notes" / "2.txt").read_text() == "2"
    assert not (tmp_path / "st-a" / "approval-rules.sqlite3").exists()  # nothing per worker any more


def test_one_decided_call_runs_once_across_workers(tmp_path: Path, postgres_url: str) -> None:
    """The same resume value reaches two workers at once: one runs the call, the other is refused."""
    with _legs(tmp_path, "a", postgres_url) as a, _legs(tmp_path, "b", postgres_url) as b:
        a.standing_rules()  # both schemas ready: the race is on the claim, not the migration
        b.standing_rules()
        for n in range(5):
            results: dict[str, Any] = {}
            start = threading.Barrier(2)

            def call(
                name: str, legs: Legs, n: int = n, start: threading.Barrier = start, results: dict[str, Any] = results
            ) -> None:
                start.wait()
                results[name] = legs.run(
                    "files.write",
                    {"path": f"r{n}.txt", "content": name},
                    session="t",
                    call_id=f"c{n}",
                    approval={"type": "approve", "by": "dan"},
                )

            threads = [threading.Thread(target=call, args=(k, v)) for k, v in (("a", a), ("b", b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = [k for k, r in results.items() if r.ok]
            (refused,) = [r for r in results.values() if not r.ok]
            assert len(ok) == 1 and refused.error.type == "approval_denied"
            assert "already decided (approve by dan" in refused.error.message
            other = "b" if ok == ["a"] else "a"
            assert (tmp_path / f"ws-{ok[0]}" / f"r{n}.txt").exists() and not (tmp_path / f"ws-{other}" / f"r{n}.txt").exists()
        # a rejection given to one worker cannot become an approval on the other
        assert a.run("files.write", {"path": "x.txt", "content": "x"}, session="t", call_id="cx", approval=False).error
        r = b.run("files.write", {"path": "x.txt", "content": "x"}, session="t", call_id="cx", approval=True)
        assert r.error.type == "approval_denied" and "already decided (reject" in r.error.message
        assert not (tmp_path / "ws-b" / "x.txt").exists()


def _old_file(state_dir: Path) -> None:
    """An ``approval-rules.sqlite3`` as the per-directory store before v4 wrote it (its exact DDL)."""
    state_dir.mkdir(parents=True)
    db = sqlite3.connect(state_dir / "approval-rules.sqlite3")
    db.execute("CREATE TABLE standing_rules (id TEXT PRIMARY KEY, rule TEXT NOT NULL, session TEXT, scope TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE decided_calls (session TEXT NOT NULL, call_id TEXT NOT NULL,"
        " decision TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (session, call_id))"
    )
    old1 = {"id": "sr-old1", "action": "files.write", "match": {"path": ["ok/*"]}, "scope": "always", "session": None}
    old2 = {"id": "sr-old2", "action": "files.write", "match": None, "scope": "session", "session": "s"}
    rules = [
        (json.dumps({**old1, "by": "frank", "created": "2026-01-01T00:00:00+00:00"}), "sr-old1", None, "always"),
        (json.dumps({**old2, "by": None, "created": "2026-01-01T00:00:01+00:00"}), "sr-old2", "s", "session"),
    ]
    db.executemany("INSERT INTO standing_rules (rule, id, session, scope) VALUES (?, ?, ?, ?)", rules)
    db.execute(
        "INSERT INTO decided_calls VALUES ('t', 'c1', '{\"type\": \"reject\", \"by\": \"dan\"}', '2026-01-01T00:00:02+00:00')"
    )
    db.commit()
    db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_old_approval_rules_file_is_imported_once(tmp_path: Path, backend: str, request) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    _old_file(tmp_path / "st-a")
    with _legs(tmp_path, "a", url, _never) as legs:
        assert [r.id for r in legs.standing_rules("s")] == ["sr-old1", "sr-old2"]
        assert legs.run("files.write", {"path": "ok/a.txt", "content": "A"}, session="x").ok  # the always rule
        r = legs.run("files.write", {"path": "b.txt", "content": "B"}, session="t", call_id="c1", approval=True)
        assert r.error.type == "approval_denied" and "already decided (reject by dan" in r.error.message
        legs.revoke_standing_rule("sr-old1")
    state = tmp_path / "st-a"
    assert not (state / "approval-rules.sqlite3").exists() and (state / "approval-rules.sqlite3.migrated").exists()
    with _legs(tmp_path, "a", url) as legs:  # a restart does not import it again: the revoked rule stays revoked
        assert [r.id for r in legs.standing_rules()] == ["sr-old2"]
    assert not (tmp_path / "ws-a" / "b.txt").exists()


def test_a_store_that_is_down_fails_closed(tmp_path: Path, private_postgres) -> None:
    url = private_postgres.create_database()
    with _legs(tmp_path, "a", url, _never, timeout_s=1.0) as legs:
        legs.add_standing_rule("files.write", {"path": ["ok/*"]}, session="s")
        assert legs.run("files.write", {"path": "ok/1.txt", "content": "1"}, session="s").ok
        private_postgres.stop()
        try:
            r = legs.run("files.write", {"path": "ok/2.txt", "content": "2"}, session="s")
            assert r.error.type == "unavailable" and "PostgreSQL at 127.0.0.1" in r.error.message, r.error
            r = legs.run("files.write", {"path": "c.txt", "content": "C"}, session="s", call_id="c", approval=True)
            assert r.error.type == "unavailable" and "PostgreSQL at 127.0.0.1" in r.error.message, r.error
            assert legs.approval_request("files.write", {"path": "ok/3.txt", "content": "3"}, session="s") is None
        finally:
            private_postgres.start()
        assert not (tmp_path / "ws-a" / "ok" / "2.txt").exists() and not (tmp_path / "ws-a" / "c.txt").exists()
        # back: the rule applies again and the claim was never taken, so the decision still counts once
        assert legs.run("files.write", {"path": "ok/2.txt", "content": "2"}, session="s").ok
        assert legs.run("files.write", {"path": "c.txt", "content": "C"}, session="s", call_id="c", approval=True).ok
