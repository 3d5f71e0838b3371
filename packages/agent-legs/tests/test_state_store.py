"""The state store against real SQLite files and a real PostgreSQL (``postgres_url``: a fresh database).

Several worker processes on separate state directories share only the database: the send ledger
claims once, budgets are exact, sessions are registered; the schema is created and migrated from
an empty database and from the older per-file SQLite layout without losing counts.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_legs import ConfigError, Legs
from agent_legs._settings import Settings
from agent_legs._state import SCHEMA_VERSION, StateStore, open_store, worker_id
from agent_legs._state._base import ApprovalError
from agent_legs._state._postgres import PostgresStore
from agent_legs._state._sqlite import SqliteStore
from agent_legs_testing.mail import PASSWORD


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request, tmp_path: Path):
    """Makes independent store instances (as separate workers would have) on one backend."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "shared" / "state.sqlite3")
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_schema_is_created_with_a_version(store_factory) -> None:
    async def main() -> None:
        store = store_factory()
        assert await store.schema_version() == SCHEMA_VERSION
        other = store_factory()  # a second worker finds it migrated
        assert await other.schema_version() == SCHEMA_VERSION
        await store.aclose()
        await other.aclose()

    run(main())


def test_budget_counts_are_exact_under_concurrent_workers_in_one_loop(store_factory) -> None:
    async def main() -> None:
        stores = [store_factory() for _ in range(4)]
        results = await asyncio.gather(
            *(s.consume_budget([("b", "total", 25), ("c", "total", 1000)]) for s in stores for _ in range(15))
        )
        assert sum(r is None for r in results) == 25
        assert all(r == (0, 25) for r in results if r is not None)
        assert await stores[0].budget_usage("b", "total") == 25
        assert await stores[0].budget_usage("c", "total") == 25  # a refused call counted nowhere
        for s in stores:
            await s.aclose()

    run(main())


def test_send_ledger_claims_once_when_workers_race(store_factory) -> None:
    async def main() -> None:
        stores = [store_factory() for _ in range(6)]
        results = await asyncio.gather(
            *(s.claim_send("call:race", "d1", "<m@x>", None, owner=f"w{i}") for i, s in enumerate(stores))
        )
        claims = [c for c, _ in results if c is not None]
        assert claims == ["<m@x>"]
        assert all(e is not None and e.state == "claimed" for c, e in results if c is None)
        await stores[1].mark_unknown("call:race", "<m@x>")  # lost mid-DATA: possibly sent
        claimed, entry = await stores[2].claim_send("call:race", "d1", "<m@x>", None)
        assert claimed is None and entry is not None and entry.state == "unknown"
        await stores[0].release_send("call:race", "<m@x>")  # only a 'claimed' entry can be released
        assert (await stores[0].send_entry("call:race")).state == "unknown"  # type: ignore[union-attr]
        # released: the key is free again; sent: the result is kept
        claimed, _ = await stores[0].claim_send("call:free", "d", "<f@x>", None)
        await stores[0].release_send("call:free", "<f@x>")
        claimed, _ = await stores[1].claim_send("call:free", "d", "<f@x>", None)
        assert claimed == "<f@x>"
        await stores[1].mark_sent("call:free", "<f@x>", {"recipients": ["a@example.com"]})
        _, entry = await stores[3].claim_send("call:free", "other", "<f@x>", None)
        assert entry is not None and entry.state == "sent" and entry.result == {"recipients": ["a@example.com"]}
        # a content key outside its window is claimed anew with a new Message-ID
        await stores[0].claim_send("content:1", "d", "<c@x>", 10.0, now=1000.0)
        fresh, _ = await stores[1].claim_send("content:1", "d", "<c@x>", 10.0, now=1011.0)
        assert fresh == "<c.1011@x>"
        for s in stores:
            await s.aclose()

    run(main())


def test_approval_is_decided_exactly_once(store_factory) -> None:
    async def main() -> None:
        a, b = store_factory(), store_factory()
        row = await a.enqueue_approval(
            action="email.send",
            tool_name="email_send",
            arguments={"to": ["x"]},
            session="s1",
            reason="policy.require_approval['email.send']",
            call_id="c1",
            timeout_s=60,
        )
        assert [p.id for p in await b.pending_approvals()] == [row.id]
        results = await asyncio.gather(
            *(s.decide_approval(row.id, d, by=f"{d}-{i}") for i, (s, d) in enumerate([(a, "approved"), (b, "rejected")] * 3)),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1 and all(isinstance(r, ApprovalError) for r in results if r not in winners)
        final = await a.approval(row.id)
        assert final is not None and final.state == winners[0].state and final.by == winners[0].by
        assert await b.pending_approvals() == []
        with pytest.raises(ApprovalError, match="no approval request"):
            await a.decide_approval("nope", "approved")
        late = await a.enqueue_approval(
            action="email.send",
            tool_name="email_send",
            arguments={},
            session="s",
            reason="r",
            call_id=None,
            timeout_s=1,
            now=1000.0,
        )
        assert late.id not in [p.id for p in await a.pending_approvals()]  # past its expiry: not listed
        with pytest.raises(ApprovalError, match="expired"):
            await b.decide_approval(late.id, "approved")
        assert (await a.approval(late.id)).state == "expired"  # type: ignore[union-attr]
        await a.aclose()
        await b.aclose()

    run(main())


def test_session_labels_and_registry(store_factory) -> None:
    async def main() -> None:
        a, b = store_factory(), store_factory()
        await a.put_label("s1", "call-1", "secret", {"text": "PIN 1234", "source": "email.read"})
        await b.put_label("s1", "call-2", "untrusted", "a web page")
        await b.put_label("s2", None, "secret", "other session")
        assert [(x["call_id"], x["label"], x["piece"]) for x in await a.labels("s1")] == [
            ("call-1", "secret", {"text": "PIN 1234", "source": "email.read"}),
            ("call-2", "untrusted", "a web page"),
        ]
        assert [x["call_id"] for x in await b.labels("s1", "untrusted")] == ["call-2"]
        assert await a.drop_labels("s1") == 2 and await a.labels("s1") == [] and len(await a.labels("s2")) == 1

        held = await a.register_session("s1", "w1", "browser", now=1000.0)
        assert held.worker == "w1"
        assert (await b.register_session("s1", "w2", "browser", now=1010.0)).worker == "w1"  # w1 holds it
        assert await a.heartbeat("w1", now=1100.0) == 1
        assert (await b.register_session("s1", "w2", "browser", stale_s=120, now=1200.0)).worker == "w1"
        taken = await b.register_session("s1", "w2", "browser", stale_s=120, now=1300.0)  # w1 went silent
        assert taken.worker == "w2" and taken.registered == 1300.0
        assert [(h.session, h.resource, h.worker) for h in await a.sessions()] == [("s1", "browser", "w2")]
        assert await a.release_session("s1", "w1") == 0 and await b.release_session("s1", "w2") == 1
        assert await a.sessions() == []
        await a.aclose()
        await b.aclose()

    run(main())


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:pw@db/x", "is not a PostgreSQL URL (scheme 'mysql')"),
        ("localhost:5432", "is not a PostgreSQL URL"),
        ("postgresql://u:pw@db:notaport/x", "is not a valid PostgreSQL URL"),
    ],
)
def test_a_bad_url_is_a_config_error_naming_the_fix(tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", settings={"state": {"url": url}})
    assert expected in str(err.value) and "postgresql://USER:" in str(err.value)
    assert "pw@" not in str(err.value)  # the password is never shown
    assert not (tmp_path / "st").exists() and not (tmp_path / "ws").exists()  # nothing created


def test_url_from_the_environment_and_secret(tmp_path: Path, postgres_url: str, monkeypatch) -> None:
    user_host = postgres_url.replace(f":{'pg-test-Secr3t'}@", ":{secret:PG_PASSWORD}@")
    monkeypatch.setenv("AGENT_LEGS_STATE__URL", user_host)
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        secrets={"PG_PASSWORD": "pg-test-Secr3t"},
        policy={"budgets": [{"actions": "files.write", "limit": 1}]},
    ) as legs:
        assert legs.run("files.write", {"path": "a.txt", "content": "x"}).ok
        r = legs.run("files.write", {"path": "b.txt", "content": "x"})
        assert r.error is not None and r.error.type == "budget_exceeded"
    assert not (tmp_path / "st" / "state.sqlite3").exists()  # the counts live in PostgreSQL
    monkeypatch.delenv("AGENT_LEGS_STATE__URL")
    assert isinstance(open_store(tmp_path, Settings()), SqliteStore)


# -- worker processes sharing only the database ------------------------------------------------------
_WORKER = """
import json, sys
from agent_legs import Legs
cfg = json.loads(sys.argv[1])
out = {"files": [], "email": None, "sessions": None}
with Legs(workspace=cfg["ws"], state_dir=cfg["st"], policy=cfg["policy"], secrets={"SMTP_PASSWORD": cfg["pw"]},
          settings=cfg["settings"], approver=lambda request: True) as legs:
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    if cfg.get("send"):
        r = legs.run("email.send", {"to": ["ana@example.com"], "subject": "Once", "body": "only once"},
                     call_id="call-shared")
        out["email"] = {"ok": r.ok, "duplicate": (r.data or {}).get("duplicate"), "error": r.error.type if r.error
                        else None}
    for i in range(cfg["calls"]):
        r = legs.run("files.write", {"path": f"{cfg['tag']}-{i}.txt", "content": "x"}, session=f"{cfg['tag']}-{i}")
        out["files"].append("ok" if r.ok else r.error.type)
print(json.dumps(out), flush=True)
"""


def _workers(
    tmp_path: Path,
    n: int,
    settings: dict[str, Any],
    policy: dict[str, Any],
    calls: int,
    send: bool = False,
    shared_state_dir: bool = False,
) -> list[dict[str, Any]]:
    procs = []
    for i in range(n):
        st = tmp_path / ("st" if shared_state_dir else f"st{i}")
        cfg = {
            "ws": str(tmp_path / f"ws{i}"),
            "st": str(st),
            "policy": policy,
            "pw": PASSWORD,
            "settings": settings,
            "calls": calls,
            "tag": f"w{i}",
            "send": send,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def test_workers_on_separate_state_dirs_share_budgets_and_the_ledger(
    tmp_path: Path, postgres_url: str, smtp_server, mail_ca
) -> None:
    """4 processes x 8 calls against a 13/day budget: exactly 13 run; one email.send per call id."""
    settings = {
        "state": {"url": postgres_url},
        "email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])},
    }
    policy = {
        "allow": ["files.*", "email.*"],
        "email": {"allow_recipients": ["*@example.com"]},
        "budgets": [{"actions": "files.write", "limit": 13, "per": "day"}],
    }
    results = _workers(tmp_path, 4, settings, policy, calls=8, send=True)
    flat = [o for r in results for o in r["files"]]
    assert flat.count("ok") == 13 and flat.count("budget_exceeded") == 19, results
    assert sum(len(list((tmp_path / f"ws{i}").iterdir())) for i in range(4)) == 13  # refused calls wrote nothing
    emails = [r["email"] for r in results]
    assert len(smtp_server.messages) == 1, emails  # one message on the wire
    assert sum(1 for e in emails if e["ok"] and not e["duplicate"]) == 1
    # the others: the earlier result (sent) or "possibly sent" (still in flight): never a second send
    assert all(e["duplicate"] or e["error"] == "failed" for e in emails if not (e["ok"] and not e["duplicate"]))


def test_processes_on_one_state_dir_send_once_and_count_exactly(tmp_path: Path, smtp_server, mail_ca) -> None:
    """The embedded default: 4 processes on one state directory (SQLite), the same call id at once."""
    settings = {"email": {"from_address": "bot@example.com", "smtp": smtp_server.settings(mail_ca["ca"])}}
    policy = {
        "allow": ["files.*", "email.*"],
        "email": {"allow_recipients": ["*@example.com"]},
        "budgets": [{"actions": "files.write", "limit": 9, "per": "day"}],
    }
    results = _workers(tmp_path, 4, settings, policy, calls=5, send=True, shared_state_dir=True)
    flat = [o for r in results for o in r["files"]]
    assert flat.count("ok") == 9 and flat.count("budget_exceeded") == 11, results
    assert len(smtp_server.messages) == 1, [r["email"] for r in results]


def test_legs_registers_its_sessions(tmp_path: Path, store_factory) -> None:
    store = store_factory()
    settings = {"state": {"url": store.url}} if isinstance(store, PostgresStore) else {}
    state_dir = tmp_path / "shared" if isinstance(store, SqliteStore) else tmp_path / "st"
    with Legs(workspace=tmp_path / "ws", state_dir=state_dir, settings=settings) as legs:
        assert legs.run("files.write", {"path": "a.txt", "content": "x"}, session="conv-1").ok

        async def holders() -> list[tuple[str, str]]:
            for _ in range(100):  # registration is in the background: wait for it
                found = [(h.session, h.worker) for h in await store.sessions()]
                if found:
                    return found
                await asyncio.sleep(0.05)
            return []

        assert run(holders()) == [("conv-1", worker_id())]
        legs.close_session("conv-1")
        assert run(store.sessions()) == []
        assert legs.run("files.write", {"path": "b.txt", "content": "x"}, session="conv-2").ok
        assert run(holders()) == [("conv-2", worker_id())]
    assert run(store.sessions()) == []  # close releases every registration of this worker
    run(store.aclose())


# -- migrations ----------------------------------------------------------------------------------------
def test_migration_from_the_old_per_file_layout_keeps_counts_and_the_ledger(tmp_path: Path) -> None:
    st, ws = tmp_path / "st", tmp_path / "ws"
    st.mkdir()
    with sqlite3.connect(st / "budgets.sqlite3") as db:  # the layout before the store, as _budgets.py wrote it
        db.execute(
            "CREATE TABLE budget_usage (budget TEXT NOT NULL, window TEXT NOT NULL, used INTEGER NOT NULL, "
            "PRIMARY KEY (budget, window))"
        )
        db.execute("INSERT INTO budget_usage VALUES ('files.write/total', 'total', 4)")
    with sqlite3.connect(st / "email-ledger.sqlite3") as db:  # ... and as the email module wrote it
        db.execute(
            "CREATE TABLE sends (key TEXT PRIMARY KEY, state TEXT NOT NULL, message_id TEXT NOT NULL, "
            "result TEXT, updated REAL NOT NULL, digest TEXT)"
        )
        db.execute("INSERT INTO sends VALUES ('call:old-sent', 'sent', '<a@x>', '{\"recipients\": [\"a@x\"]}', 1.0, 'd')")
        db.execute("INSERT INTO sends VALUES ('call:old-sending', 'sending', '<b@x>', NULL, 2.0, 'd')")
    policy = {"budgets": [{"actions": "files.write", "limit": 5}]}
    with Legs(workspace=ws, state_dir=st, policy=policy) as legs:
        assert legs.run("files.write", {"path": "a.txt", "content": "x"}).ok  # the 5th
        r = legs.run("files.write", {"path": "b.txt", "content": "x"})
        assert r.error is not None and r.error.type == "budget_exceeded" and "5/5" in r.error.message

    async def check() -> None:
        store = SqliteStore(st / "state.sqlite3")
        assert await store.schema_version() == SCHEMA_VERSION
        sent, sending = await store.send_entry("call:old-sent"), await store.send_entry("call:old-sending")
        assert sent is not None and sent.state == "sent" and sent.result == {"recipients": ["a@x"]}
        assert sending is not None and sending.state == "unknown"  # never resent
        await store.aclose()

    run(check())
    with Legs(workspace=ws, state_dir=st, policy=policy) as legs:  # imported once: not counted again
        r = legs.run("files.write", {"path": "c.txt", "content": "x"})
        assert r.error is not None and "5/5" in r.error.message


def test_migration_of_an_empty_postgres_database_by_racing_workers(postgres_url: str) -> None:
    async def main() -> None:
        stores: list[StateStore] = [PostgresStore(postgres_url) for _ in range(5)]
        assert await asyncio.gather(*(s.schema_version() for s in stores)) == [SCHEMA_VERSION] * 5
        import psycopg

        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            cur = await conn.execute("SELECT version FROM agent_legs_schema")
            # each version migrated once
            assert [r[0] for r in await cur.fetchall()] == list(range(1, SCHEMA_VERSION + 1))
        for s in stores:
            await s.aclose()

    run(main())
