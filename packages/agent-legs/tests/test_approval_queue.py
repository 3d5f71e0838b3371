"""``Legs(approver="queue")``: calls wait in the state store until decided from another process.

The queue is decided from the CLI (``agent-legs approvals/approve/reject``) in a subprocess while a
thread waits in ``legs.run``, from the Python API, across processes sharing only PostgreSQL; a
request that nobody decides expires (``policy.approval_timeout_s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent_legs import ApprovalError, ApprovalQueue, ConfigError, Legs, Settings

POLICY = {"allow": ["files.*"], "require_approval": ["files.write"]}
SECRET = "tok-very-secret-123"


def cli(dirs: tuple[Path, Path], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    ws, st = dirs
    return subprocess.run(
        [sys.executable, "-m", "agent_legs._cli", "--workspace", str(ws), "--state-dir", str(st), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def wait_for_pending(list_pending: Any, n: int = 1, timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_pending()
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError("no pending approval appeared")


class Waiter(threading.Thread):
    """``legs.run`` in a thread, as an agent's tool call would block."""

    def __init__(self, legs: Legs, path: str, session: str = "conv-7") -> None:
        super().__init__(daemon=True)
        self.legs, self.path, self.session = legs, path, session
        self.result: Any = None

    def run(self) -> None:
        self.result = self.legs.run(
            "files.write", {"path": self.path, "content": f"key={SECRET}"}, session=self.session, call_id="call-9"
        )


def test_queue_decided_from_the_cli_in_a_subprocess_while_legs_run_waits(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue", secrets={"TOKEN": SECRET}) as legs:
        waiter = Waiter(legs, "approved.txt")
        waiter.start()

        def listed() -> list[dict[str, Any]]:
            proc = cli(dirs, "approvals", "--json")
            assert proc.returncode == 0, proc.stderr
            return json.loads(proc.stdout)

        [item] = wait_for_pending(listed)
        assert {"id", "action", "arguments", "session", "reason", "created"} <= set(item)
        assert item["action"] == "files.write" and item["session"] == "conv-7" and item["call_id"] == "call-9"
        assert item["arguments"]["path"] == "approved.txt"
        assert SECRET not in json.dumps(item) and "[REDACTED:TOKEN]" in item["arguments"]["content"]
        assert "policy.require_approval['files.write']" in item["reason"]
        table = cli(dirs, "approvals")
        assert table.returncode == 0 and item["id"] in table.stdout and "files.write" in table.stdout
        assert not (ws / "approved.txt").exists()  # still waiting

        proc = cli(dirs, "approve", item["id"], "--by", "ana")
        assert proc.returncode == 0 and f"approved {item['id']}" in proc.stderr, proc.stderr
        waiter.join(30)
        assert waiter.result is not None and waiter.result.ok, waiter.result
        assert (ws / "approved.txt").read_text() == f"key={SECRET}"

        again = cli(dirs, "reject", item["id"], "--by", "bob")  # a decision is taken once
        assert again.returncode == 2 and "already approved by ana" in again.stderr, again.stderr
        unknown = cli(dirs, "approve", "0123abcd")
        assert unknown.returncode == 2 and "no approval request with id '0123abcd'" in unknown.stderr
        assert "Traceback" not in again.stderr + unknown.stderr
        assert json.loads(cli(dirs, "approvals", "--json").stdout) == []


def test_rejected_from_the_python_api_with_a_message(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        waiter = Waiter(legs, "rejected.txt")
        waiter.start()
        [item] = wait_for_pending(legs.approvals.pending)
        decided = legs.approvals.reject(item.id, message="not on a Friday", by="bob")
        assert decided.state == "rejected" and decided.by == "bob"
        waiter.join(30)
        r = waiter.result
        assert r is not None and not r.ok and r.error.type == "approval_denied"
        assert not (ws / "rejected.txt").exists()
        with pytest.raises(ApprovalError, match="already rejected by bob"):
            legs.approvals.approve(item.id)


def test_an_undecided_request_expires(dirs) -> None:
    ws, st = dirs
    policy = {**POLICY, "approval_timeout_s": 0.6}
    with Legs(workspace=ws, state_dir=st, policy=policy, approver="queue") as legs:
        waiter = Waiter(legs, "late.txt")
        waiter.start()
        [item] = wait_for_pending(legs.approvals.pending)
        waiter.join(30)
        r = waiter.result
        assert r is not None and r.error is not None and r.error.type == "approval_denied"
        assert "expired undecided (policy.approval_timeout_s)" in r.error.message and item.id in r.error.message
        assert not (ws / "late.txt").exists()
    proc = cli(dirs, "approve", item.id)  # too late: nothing runs, and the CLI says why
    assert proc.returncode == 2 and "expired" in proc.stderr, proc.stderr


def test_a_bad_approver_name_is_a_config_error(dirs) -> None:
    with pytest.raises(ConfigError, match="approver='queue'"):
        Legs(workspace=dirs[0], state_dir=dirs[1], approver="queu")  # type: ignore[arg-type]


_QUEUE_WORKER = """
import json, sys
from agent_legs import Legs
cfg = json.loads(sys.argv[1])
with Legs(workspace=cfg["ws"], state_dir=cfg["st"], policy=cfg["policy"], settings=cfg["settings"],
          approver="queue") as legs:
    r = legs.run("files.write", {"path": "from-worker.txt", "content": "x"}, session="remote")
print(json.dumps({"ok": r.ok, "error": r.error.type if r.error else None}), flush=True)
"""


def test_workers_sharing_postgres_see_one_queue(tmp_path: Path, postgres_url: str) -> None:
    """A worker waits (own state directory); another process lists and approves it (only the database shared)."""
    settings = {"state": {"url": postgres_url}}
    cfg = {"ws": str(tmp_path / "ws1"), "st": str(tmp_path / "st1"), "policy": POLICY, "settings": settings}
    worker = subprocess.Popen([sys.executable, "-c", _QUEUE_WORKER, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)
    try:
        with ApprovalQueue.open(tmp_path / "st2", Settings(state={"url": postgres_url})) as queue:
            [item] = wait_for_pending(queue.pending, timeout=60)
            assert item.session == "remote" and item.arguments["path"] == "from-worker.txt"
            listed = cli((tmp_path / "ws3", tmp_path / "st3"), "approvals", "--json", env={"AGENT_LEGS_STATE__URL": postgres_url})
            assert [i["id"] for i in json.loads(listed.stdout)] == [item.id], listed.stderr
            queue.approve(item.id, by="ops")
        out = json.loads(worker.communicate(timeout=60)[0])
    finally:
        if worker.poll() is None:
            worker.kill()
    assert out == {"ok": True, "error": None}
    assert (tmp_path / "ws1" / "from-worker.txt").exists()


def test_a_cancelled_waiter_expires_its_request(dirs) -> None:
    """A caller that stops waiting (its own deadline) leaves no request that someone could still approve."""
    import asyncio

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:

        async def caller() -> None:
            task = asyncio.ensure_future(legs.arun("files.write", {"path": "gone.txt", "content": "x"}))
            while not await asyncio.to_thread(legs.approvals.pending):
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(caller())
        assert legs.approvals.pending() == []
        [row] = [r for r in [legs.approvals.get(i) for i in _ids(st)] if r is not None]
        assert row.state == "expired"
        with pytest.raises(ApprovalError, match="already expired"):
            legs.approvals.approve(row.id)
    assert not (ws / "gone.txt").exists()


def _ids(state_dir: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(state_dir / "state.sqlite3") as db:
        return [r[0] for r in db.execute("SELECT id FROM approvals")]


def test_an_edit_from_the_queue_is_validated_and_checked_by_the_policy_again(dirs) -> None:
    ws, st = dirs
    policy = {**POLICY, "files": {"deny": ["secret/**"]}}
    with Legs(workspace=ws, state_dir=st, policy=policy, approver="queue") as legs:
        waiter = Waiter(legs, "draft.txt")
        waiter.start()
        [item] = wait_for_pending(legs.approvals.pending)
        decided = legs.approvals.edit(item.id, {"path": "final.txt", "content": "edited"}, by="ana")
        assert decided.state == "edited" and decided.args == {"path": "final.txt", "content": "edited"}
        waiter.join(30)
        assert waiter.result is not None and waiter.result.ok, waiter.result
        assert (ws / "final.txt").read_text() == "edited" and not (ws / "draft.txt").exists()
        assert legs.approvals.get(item.id).state == "edited"  # type: ignore[union-attr]

        denied = Waiter(legs, "draft2.txt")  # an edit the policy denies: refused, nothing runs
        denied.start()
        [item] = wait_for_pending(legs.approvals.pending)
        legs.approvals.edit(item.id, {"path": "secret/keys.txt", "content": "x"}, by="ana")
        denied.join(30)
        r = denied.result
        assert r is not None and not r.ok and r.error.type == "denied", r
        assert not (ws / "secret").exists() and not (ws / "draft2.txt").exists()

        invalid = Waiter(legs, "draft3.txt")  # an edit that is not valid arguments: refused
        invalid.start()
        [item] = wait_for_pending(legs.approvals.pending)
        legs.approvals.edit(item.id, {"path": "x.txt", "colour": "red"}, by="ana")
        invalid.join(30)
        assert invalid.result is not None and invalid.result.error.type == "invalid_input", invalid.result
        with pytest.raises(ApprovalError, match="already edited by ana"):
            legs.approvals.approve(item.id)


def test_approved_always_for_the_session_from_the_queue_adds_a_standing_rule(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        first = Waiter(legs, "one.txt", session="conv-7")
        first.start()
        [item] = wait_for_pending(legs.approvals.pending)
        legs.approvals.approve(item.id, by="ana", remember="session")
        first.join(30)
        assert first.result is not None and first.result.ok
        [rule] = legs.standing_rules("conv-7")
        assert rule.action == "files.write" and rule.scope == "session" and rule.by == "ana"
        assert legs.run("files.write", {"path": "two.txt", "content": "x"}, session="conv-7").ok  # no approval asked
        assert legs.approvals.pending() == []
        assert legs.standing_rules("other") == []  # only that session


def test_a_version_1_store_is_migrated_with_its_pending_requests(dirs) -> None:
    import sqlite3

    _, st = dirs
    db = sqlite3.connect(st / "state.sqlite3")  # the v1 schema, as a release before edits wrote it
    db.execute("CREATE TABLE agent_legs_schema (version INTEGER NOT NULL, applied REAL NOT NULL)")
    db.execute("INSERT INTO agent_legs_schema VALUES (1, 0)")
    db.execute(
        "CREATE TABLE approvals (id TEXT PRIMARY KEY, action TEXT NOT NULL, tool_name TEXT NOT NULL, arguments TEXT NOT NULL,"
        " session TEXT NOT NULL, reason TEXT NOT NULL, call_id TEXT, created REAL NOT NULL, expires REAL NOT NULL,"
        " state TEXT NOT NULL, decided REAL, decided_by TEXT, message TEXT)"
    )
    db.execute(
        "INSERT INTO approvals VALUES ('abc123', 'files.write', 'files_write', '{\"path\": \"a\"}', 's', 'r', NULL, ?, ?,"
        " 'pending', NULL, NULL, NULL)",
        (time.time(), time.time() + 600),
    )
    db.commit()
    db.close()
    with ApprovalQueue.open(st) as queue:
        [row] = queue.pending()
        assert row.id == "abc123" and row.args is None
        assert queue.edit("abc123", {"path": "b", "content": ""}, by="ana").args == {"path": "b", "content": ""}
        assert queue.get("abc123").state == "edited"  # type: ignore[union-attr]
