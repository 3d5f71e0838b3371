"""The policy engine, budgets and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from core_test_actions import registry

from agent_legs import ConfigError, Legs, Policy, Secrets
from agent_legs._policy import PolicyEngine
from agent_legs._secrets import Redactor


@pytest.mark.parametrize(
    ("action", "kind", "rule"),
    [
        ("files.read", "allow", "policy.allow['files.*']"),
        ("files.delete", "deny", "policy.deny['files.delete']"),
        ("email.send", "approve", "policy.require_approval['email.send']"),
        ("email.list", "allow", "policy.allow['email.list']"),
        ("code.run", "deny", "policy.deny['code.*']"),
        ("shell.exec", "deny", "policy.allow (action not listed)"),
        ("http.request", "approve", "policy.require_approval['http.*']"),
    ],
)
def test_decisions_name_their_rule(action: str, kind: str, rule: str) -> None:
    engine = PolicyEngine(
        Policy(
            allow=["files.*", "http.request", "email.list", "code.*"],
            deny=["files.delete", "code.*"],
            require_approval=["email.send", "http.*"],
        )
    )
    d = engine.decide(action)
    assert (d.kind, d.rule) == (kind, rule)


def test_deny_beats_approval_beats_allow() -> None:
    engine = PolicyEngine(Policy(allow=["*"], require_approval=["x.*"], deny=["x.y"]))
    assert engine.decide("x.y").kind == "deny"
    assert engine.decide("x.z").kind == "approve"
    assert engine.decide("a.b").kind == "allow"


def test_default_policy_matches_contract() -> None:
    p = Policy()
    assert p.allow == ["files.*", "http.request", "browser.*", "code.*", "email.list", "email.read"]
    assert p.require_approval == ["email.send"] and p.deny == []
    assert p.network.allow_hosts == ["*"] and p.network.allow_private is False
    assert p.code.network is False and p.code.timeout_s == 60 and p.code.memory_mb == 512
    assert p.http.max_response_bytes == 2_000_000 and p.files.max_read_bytes == 1_000_000
    assert p.email.allow_recipients == [] and p.email.max_recipients == 10


def test_policy_from_toml(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        'allow = ["files.*"]\n[network]\nallow_hosts = ["api.example.com", "127.0.0.1:8080"]\n'
        '[[budgets]]\nactions = ["http.*", "browser.*"]\nlimit = 3\nper = "hour"\n'
    )
    p = Policy.from_toml(f)
    assert p.network.allow_hosts == ["api.example.com", "127.0.0.1:8080"]
    assert p.budgets[0].patterns == ["http.*", "browser.*"]
    f.write_text('[policy]\nallow = ["code.*"]\n')  # the [policy] table of agent-legs.toml
    assert Policy.from_toml(f).allow == ["code.*"]
    f.write_text('[network]\nallow_host = ["x"]\n')
    with pytest.raises(ConfigError, match="allow_host"):
        Policy.from_toml(f)
    with pytest.raises(ConfigError):
        Policy.from_dict({"budgets": [{"limit": 1, "per": "fortnight"}]})


def test_budgets_persist_across_restart(dirs) -> None:
    ws, st = dirs
    policy = {"allow": ["test.*"], "budgets": [{"actions": "test.echo", "limit": 3, "per": "day"}]}
    with Legs(workspace=ws, state_dir=st, policy=policy, registry=registry) as legs:
        assert all(legs.run("test.echo", {"text": "a"}).ok for _ in range(2))
    with Legs(workspace=ws, state_dir=st, policy=policy, registry=registry) as legs:
        assert legs.run("test.echo", {"text": "a"}).ok
        r = legs.run("test.echo", {"text": "a"})
        assert r.error and r.error.type == "budget_exceeded"
        assert "test.echo/day" in r.error.message and "3/3" in r.error.message
        assert legs.run("test.fail", {"text": "other actions are not counted"}).error.type == "not_found"


def test_budgets_count_per_session_when_scoped_to_session(dirs) -> None:
    # scope = "session" is the opt-in; the default ("all") is the test.fail budget here.
    ws, st = dirs
    policy = {
        "allow": ["test.*"],
        "budgets": [{"actions": "test.echo", "limit": 2, "scope": "session"}, {"actions": "test.fail", "limit": 1}],
    }
    with Legs(workspace=ws, state_dir=st, policy=policy, registry=registry) as legs:
        for session in ("alice", "bob"):  # each session has its own two calls
            assert all(legs.run("test.echo", {"text": "a"}, session=session).ok for _ in range(2))
        r = legs.run("test.echo", {"text": "a"}, session="alice")
        assert r.error and r.error.type == "budget_exceeded" and "session 'alice'" in r.error.message
        assert legs.run("test.echo", {"text": "a"}, session="carol").ok
        assert legs.run("test.fail", {"text": "x"}, session="alice").error.type == "not_found"
        r = legs.run("test.fail", {"text": "x"}, session="bob")  # shared by every session
        assert r.error and r.error.type == "budget_exceeded" and "(all sessions)" in r.error.message


_BUDGET_WORKER = """
import json, sys
from agent_legs import Legs
ws, st, tag = sys.argv[1], sys.argv[2], sys.argv[3]
policy = {"budgets": [{"actions": "files.write", "limit": 5, "per": "day"}]}
outcomes = []
with Legs(workspace=ws, state_dir=st, policy=policy) as legs:
    for i in range(10):  # a new session per call, as a LangChain thread per conversation would be
        r = legs.run("files.write", {"path": f"{tag}-{i}.txt", "content": "x"}, session=f"{tag}-thread-{i}")
        outcomes.append("ok" if r.ok else r.error.type)
print(json.dumps(outcomes))
"""


def test_budgets_are_deployment_wide_by_default(dirs) -> None:
    # A 5/day budget, two processes (two Legs) on one state directory, 20 sessions: 5 calls in all.
    import json
    import subprocess
    import sys

    ws, st = dirs
    procs = [
        subprocess.Popen([sys.executable, "-c", _BUDGET_WORKER, str(ws), str(st), tag], stdout=subprocess.PIPE, text=True)
        for tag in ("p1", "p2")
    ]
    outcomes = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    flat = [o for run in outcomes for o in run]
    assert flat.count("ok") == 5 and flat.count("budget_exceeded") == 15, outcomes
    assert len(list(ws.iterdir())) == 5  # a refused call changed nothing
    with Legs(
        workspace=ws, state_dir=st, policy={"budgets": [{"actions": "files.write", "limit": 5, "per": "day"}]}
    ) as legs:  # a third Legs, a new session: still exhausted, and the message says for whom
        r = legs.run("files.write", {"path": "late.txt", "content": "x"}, session="fresh")
        assert r.error and r.error.type == "budget_exceeded" and "5/5" in r.error.message
        assert "(all sessions)" in r.error.message and "next day" in r.error.hint
        assert "a new session does not reset it" in r.error.hint and not r.error.retryable
    assert Policy.from_dict({"budgets": [{"limit": 1}]}).budgets[0].scope == "all"


def test_budget_windows_and_multiple_budgets(tmp_path: Path) -> None:
    import asyncio

    from agent_legs._budgets import consume, usage
    from agent_legs._policy import Budget
    from agent_legs._state._sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(tmp_path / "state.sqlite3")
        minute = Budget(actions="*", limit=2, per="minute")
        total = Budget(actions="*", limit=3, per="total")
        t = 1_700_000_000.0
        assert await consume(store, [minute, total], now=t) is None
        assert await consume(store, [minute, total], now=t) is None
        exhausted = await consume(store, [minute, total], now=t)
        assert exhausted is not None and exhausted[0] is minute
        assert await usage(store, total, now=t) == 2  # the refused call consumed nothing
        assert await consume(store, [minute, total], now=t + 60) is None  # a new minute
        assert (await consume(store, [minute, total], now=t + 120))[0] is total  # type: ignore[index]
        await store.aclose()

    asyncio.run(main())


def test_secrets_resolve_and_from_env(monkeypatch) -> None:
    s = Secrets({"TOKEN": "abc123"})
    assert s.resolve("Bearer {secret:TOKEN}") == "Bearer abc123"
    with pytest.raises(ConfigError, match="MISSING"):
        s.resolve("{secret:MISSING}")
    assert "abc123" not in repr(s)
    monkeypatch.setenv("MYAPP_GITHUB", "ghp_x")
    monkeypatch.setenv("OTHER", "no")
    assert dict(Secrets.from_env("MYAPP_")) == {"GITHUB": "ghp_x"}


def test_redactor_covers_encodings() -> None:
    r = Redactor({"K": "p@ss word/+="})
    assert r.text("x p@ss word/+= y") == "x [REDACTED:K] y"
    assert r.text("q=p%40ss%20word%2F%2B%3D") == "q=[REDACTED:K]"
    assert r.text("q=p%40ss+word%2F%2B%3D") == "q=[REDACTED:K]"
    import base64

    assert "REDACTED" in r.text(base64.b64encode(b"p@ss word/+=").decode())
    assert r.data({"a": ["p@ss word/+=", 1], "p@ss word/+=": None}) == {"a": ["[REDACTED:K]", 1], "[REDACTED:K]": None}
    assert Redactor({"short": "ab"}).text("ab") == "ab"  # too short to redact safely


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"allow": ["file.*"]}, "policy.allow entry 'file.*' matches no action; did you mean 'files.*'"),
        ({"deny": ["files_read"]}, "policy.deny entry 'files_read' matches no action; did you mean 'files.read'"),
        (
            {"require_approval": ["email.sned"]},
            "policy.require_approval entry 'email.sned' matches no action; did you mean 'email.send'",
        ),
        ({"allow": ["*"], "deny": ["shell.*"]}, "policy.deny entry 'shell.*' matches no action"),
    ],
)
def test_policy_names_that_match_no_action_are_config_errors(tmp_path: Path, policy, message) -> None:
    """A typo must not deny everything (allow) or leave a deny without effect; nothing is created."""
    with pytest.raises(ConfigError) as err:
        Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=policy)
    assert message in str(err.value)
    assert not (tmp_path / "st").exists() and not (tmp_path / "ws").exists()


def test_default_policy_lists_are_not_checked_against_a_custom_registry(tmp_path: Path) -> None:
    # the defaults name built-in actions (require_approval = ["email.send"]); this registry has none of them
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy={"allow": ["test.*"]}, registry=registry) as legs:
        assert legs.policy.require_approval == ["email.send"]
