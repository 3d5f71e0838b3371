"""Approval in the core (issue 16): decisions of every shape, edits through validation and policy again,
who decided on the span and the log line, the pre-check, decisions given once, standing rules, and
conditional ``require_approval`` entries. Real files.write calls on a real workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_legs import ApprovalDecision, ConfigError, Legs, Policy
from agent_legs._policy import PolicyEngine

POLICY = {"allow": ["files.*"], "require_approval": ["files.write"]}


def _legs(dirs, approver=None, policy=POLICY, **kw) -> Legs:
    ws, st = dirs
    return Legs(workspace=ws, state_dir=st, policy=policy, approver=approver, **kw)


def _approvals(read_log) -> list[object]:
    return [e.get("approval") for e in read_log()]


def test_dict_decisions_are_recorded_with_who_decided(dirs, read_log, captured_spans) -> None:
    answers = iter([{"type": "approve", "by": "alice"}, {"type": "reject", "message": "not that file", "by": "bob"}, True, False])
    with _legs(dirs, lambda req: next(answers), tracer_provider=captured_spans.provider) as legs:
        assert legs.run("files.write", {"path": "a.txt", "content": "A"}).ok
        r = legs.run("files.write", {"path": "b.txt", "content": "B"})
        assert r.error and r.error.type == "approval_denied"
        assert "not approved by bob: not that file" in r.error.message  # the model receives the message
        assert legs.run("files.write", {"path": "c.txt", "content": "C"}).ok
        assert legs.run("files.write", {"path": "d.txt", "content": "D"}).error.type == "approval_denied"
    ws = dirs[0]
    assert (ws / "a.txt").exists() and not (ws / "b.txt").exists() and not (ws / "d.txt").exists()
    assert _approvals(read_log) == [
        {"decision": "approved", "by": "alice", "rule": None},
        {"decision": "rejected", "by": "bob", "rule": None},
        {"decision": "approved", "by": None, "rule": None},  # a plain bool approver is on the record too
        {"decision": "rejected", "by": None, "rule": None},
    ]
    spans = captured_spans.tool_spans()
    assert [s.attributes.get("agent_legs.approval.decision") for s in spans] == ["approved", "rejected", "approved", "rejected"]
    assert [s.attributes.get("agent_legs.approval.by") for s in spans] == ["alice", "bob", None, None]


def test_allowed_calls_carry_no_approval(dirs, read_log) -> None:
    with _legs(dirs) as legs:
        assert legs.run("files.read", {"path": "nothing.txt"}).error.type == "not_found"
    assert "approval" not in read_log()[0]


@pytest.mark.parametrize("answer", ["yes", "approve", 1, {"type": "approve", "extra": 1}, {"type": "ok"}, None, {"type": "edit"}])
def test_answers_that_are_no_decision_are_rejections(dirs, read_log, answer) -> None:
    with _legs(dirs, lambda req: answer) as legs:
        r = legs.run("files.write", {"path": "a.txt", "content": "A"})
    assert r.error and r.error.type == "approval_denied"
    assert not (dirs[0] / "a.txt").exists()
    assert read_log()[0]["approval"]["decision"] == "rejected"


def test_edit_runs_the_edited_arguments_after_validation_and_policy(dirs, read_log) -> None:
    edits = iter(
        [
            {"type": "edit", "args": {"path": "edited.txt", "content": "E"}, "by": "carol"},
            {"type": "edit", "args": {"path": ".env", "content": "X=1"}},  # the files deny globs
            {"type": "edit", "args": {"path": "x.txt", "bogus": 1}},  # invalid
            {"type": "edit", "args": {"path": "../outside.txt", "content": "x"}},
        ]
    )  # escapes the workspace
    with _legs(dirs, lambda req: next(edits)) as legs:
        r = legs.run("files.write", {"path": "asked.txt", "content": "A"})
        assert r.ok
        assert legs.run("files.write", {"path": "a.txt", "content": "A"}).error.type == "denied"
        r = legs.run("files.write", {"path": "b.txt", "content": "B"})
        assert r.error.type == "invalid_input" and "edited arguments are invalid" in r.error.message
        assert not legs.run("files.write", {"path": "c.txt", "content": "C"}).ok
    ws = dirs[0]
    assert (ws / "edited.txt").read_text() == "E"
    assert not any((ws / n).exists() for n in ("asked.txt", "a.txt", ".env", "b.txt", "x.txt", "c.txt"))
    assert not (ws.parent / "outside.txt").exists()
    log = read_log()
    assert log[0]["approval"] == {"decision": "edited", "by": "carol", "rule": None}
    assert log[0]["arguments"]["path"] == "edited.txt"  # the log shows what ran
    assert [e["outcome"] for e in log[1:3]] == ["denied", "invalid_input"]  # the executor denies .env


def test_pre_check_names_the_request_and_runs_nothing(dirs, read_log) -> None:
    with _legs(dirs, secrets={"TOKEN": "s3cret-token-value"}) as legs:
        req = legs.approval_request(
            "files.write", {"path": "a.txt", "content": "s3cret-token-value"}, session="s1", call_id="call-1"
        )
        assert req is not None
        payload = req.payload()
        assert json.loads(json.dumps(payload)) == payload
        assert payload["type"] == "agent_legs.approval" and payload["action"] == "files.write"
        assert payload["tool_name"] == "files_write" and payload["tool_call_id"] == "call-1"
        assert payload["rule"] == "policy.require_approval['files.write']"
        assert payload["allowed_decisions"] == ["approve", "reject", "edit"]
        assert "s3cret" not in json.dumps(payload)
        assert legs.approval_request("files.read", {"path": "a.txt"}) is None  # allowed
        assert legs.approval_request("files.write", {"path": "a.txt"}) is None  # invalid: run says so
        assert legs.approval_request("files.write", {"path": ".env", "content": "x"}) is not None  # the executor denies
    assert read_log() == [] and not (dirs[0] / "a.txt").exists()


def test_a_given_decision_counts_once_even_after_a_restart(dirs, read_log) -> None:
    ws = dirs[0]
    with _legs(dirs) as legs:  # no approver: only the given decision can approve
        assert legs.run(
            "files.write", {"path": "a.txt", "content": "A"}, session="t", call_id="c1", approval={"type": "approve", "by": "dan"}
        ).ok
        (ws / "a.txt").unlink()
        again = legs.run(
            "files.write", {"path": "a.txt", "content": "A"}, session="t", call_id="c1", approval={"type": "approve"}
        )
        assert again.error.type == "approval_denied" and "already decided (approve by dan" in again.error.message
        rejected = legs.run(
            "files.write",
            {"path": "b.txt", "content": "B"},
            session="t",
            call_id="c2",
            approval={"type": "reject", "message": "no"},
        )
        assert rejected.error.type == "approval_denied"
    with _legs(dirs) as legs:  # a new process on the same state dir
        r = legs.run("files.write", {"path": "b.txt", "content": "B"}, session="t", call_id="c2", approval={"type": "approve"})
        assert r.error.type == "approval_denied" and "already decided (reject" in r.error.message
        assert (
            legs.run("files.write", {"path": "a.txt", "content": "A"}, session="t", call_id="c1", approval=True).error.type
            == "approval_denied"
        )
        # the same call id in another session (another thread) is another call
        assert legs.run("files.write", {"path": "c.txt", "content": "C"}, session="u", call_id="c1", approval=True).ok
    assert not (ws / "a.txt").exists() and not (ws / "b.txt").exists() and (ws / "c.txt").exists()
    with _legs(dirs) as legs, pytest.raises(ValueError, match="not a valid decision"):
        legs.run("files.write", {"path": "d.txt", "content": "D"}, approval={"type": "approve", "extra": 1})
    assert not (ws / "d.txt").exists()


def test_standing_rules_scoped_by_arguments_and_session(dirs, read_log) -> None:
    asked: list[str] = []

    def approver(req):
        asked.append(req.arguments["path"])
        if req.arguments["path"] == "notes/first.txt":
            return {"type": "approve", "by": "erin", "remember": "session", "match": {"path": ["notes/*"]}}
        return True

    with _legs(dirs, approver) as legs:
        assert legs.run("files.write", {"path": "notes/first.txt", "content": "1"}, session="s1").ok
        assert legs.run("files.write", {"path": "notes/second.txt", "content": "2"}, session="s1").ok
        assert legs.run("files.write", {"path": "other.txt", "content": "3"}, session="s1").ok
        assert legs.run("files.write", {"path": "notes/third.txt", "content": "4"}, session="s2").ok
        (rule,) = legs.standing_rules("s1")
        assert rule.action == "files.write" and rule.match == {"path": ["notes/*"]} and rule.by == "erin"
        assert legs.standing_rules("s2") == []
        legs.close_session("s1")
        assert legs.standing_rules() == []
        assert legs.run("files.write", {"path": "notes/fourth.txt", "content": "5"}, session="s1").ok
    assert asked == ["notes/first.txt", "other.txt", "notes/third.txt", "notes/fourth.txt"]
    log = read_log()
    assert log[1]["approval"] == {"decision": "approved", "by": "erin", "rule": rule.id}


def test_always_rules_persist_and_are_revocable(dirs) -> None:
    asked: list[str] = []

    def approver(req):
        asked.append(req.arguments["path"])
        return False

    with _legs(dirs, approver) as legs:
        rule = legs.add_standing_rule("files.write", {"path": ["ok/*"]}, scope="always", by="frank")
        with pytest.raises(ConfigError, match="no argument"):
            legs.add_standing_rule("files.write", {"pth": ["x"]})
    with _legs(dirs, approver) as legs:  # another process
        assert [r.id for r in legs.standing_rules("any")] == [rule.id]
        assert legs.run("files.write", {"path": "ok/a.txt", "content": "A"}, session="any").ok
        assert legs.revoke_standing_rule(rule.id) and not legs.revoke_standing_rule(rule.id)
        assert not legs.run("files.write", {"path": "ok/b.txt", "content": "B"}, session="any").ok
    assert asked == ["ok/b.txt"]


def test_a_given_reject_wins_over_a_standing_rule(dirs) -> None:
    with _legs(dirs) as legs:
        legs.add_standing_rule("files.write", None, scope="session", session="s")
        r = legs.run("files.write", {"path": "a.txt", "content": "A"}, session="s", call_id="c", approval={"type": "reject"})
        assert r.error.type == "approval_denied"


def test_conditional_require_approval(dirs, read_log) -> None:
    asked: list[str] = []
    policy = {"allow": ["files.*"], "require_approval": [{"action": "files.write", "unless": {"path": ["notes/*", "*.md"]}}]}
    with _legs(dirs, lambda req: asked.append(req.arguments["path"]) or False, policy=policy) as legs:
        assert legs.run("files.write", {"path": "notes/a.txt", "content": "A"}).ok
        assert legs.run("files.write", {"path": "README.MD", "content": "A"}).ok  # globs ignore case
        assert not legs.run("files.write", {"path": "secret/a.txt", "content": "A"}).ok
    assert asked == ["secret/a.txt"]
    log = read_log()
    assert log[0]["decision"] == "allow" and log[0]["rule"].startswith("policy.require_approval[0].unless")
    assert "approval" not in log[0]
    assert log[2]["rule"].startswith("policy.require_approval[0] (files.write unless path in")


def test_conditions_from_toml_and_every_element_must_fit(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'require_approval = ["files.delete", {action = "http.request", unless = {method = ["GET", '
        '"HEAD"]}}, {action = "email.send", unless = {to = ["*@example.com"], cc = ["*@example.com"], '
        'bcc = ["*@example.com"]}}]\n'
    )
    engine = PolicyEngine(Policy.from_toml(path))
    assert engine.decide_call("http.request", {"method": "GET"}).kind == "allow"
    assert engine.decide_call("http.request", {"method": "POST"}).kind == "approve"
    inside = {"to": ["a@example.com", "b@EXAMPLE.com"], "cc": [], "bcc": []}
    assert engine.decide_call("email.send", inside).kind == "allow"
    assert engine.decide_call("email.send", {**inside, "bcc": ["spy@evil.test"]}).kind == "approve"
    assert engine.decide_call("email.send", {**inside, "to": ["a@example.com", "x@evil.test"]}).kind == "approve"
    assert engine.decide_call("email.send", {"to": ["a@example.com.evil.test"], "cc": [], "bcc": []}).kind == "approve"
    assert engine.decide_call("files.delete", {}).kind == "approve"


def test_condition_typos_fail_loudly(dirs) -> None:
    with pytest.raises(ConfigError, match=r"require_approval\[0\]\.unless: http.request has no argument 'methd'"):
        _legs(dirs, policy={"require_approval": [{"action": "http.request", "unless": {"methd": ["GET"]}}]})
    with pytest.raises(ConfigError):
        _legs(dirs, policy={"require_approval": [{"action": "http.request", "if": {"method": ["GET"]}}]})
    with pytest.raises(ConfigError):
        _legs(dirs, policy={"require_approval": [{"action": "http.request", "unless": {}}]})


def test_decision_model_shapes() -> None:
    assert ApprovalDecision.coerce("approve").type == "approve"
    assert ApprovalDecision.coerce('{"type": "edit", "args": {"a": 1}}').args == {"a": 1}
    for bad in (
        {"type": "reject", "remember": "always"},
        {"type": "approve", "match": {"a": [1]}},
        {"type": "approve", "args": {}},
        "maybe",
        3,
    ):
        with pytest.raises(ValueError):
            ApprovalDecision.coerce(bad)


DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"


def test_policy_doc_standing_rule_block_runs(tmp_path, monkeypatch, capsys) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (block,) = [
        b for b in re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.DOTALL | re.MULTILINE) if "add_standing_rule" in b
    ]
    exec(compile(block, str(DOC), "exec"), {"__name__": "doc"})
    assert capsys.readouterr().out.split() == ["True", "True"]


def test_policy_doc_conditions_block_parses_and_decides(tmp_path) -> None:
    import re

    (block,) = [b for b in re.findall(r"^```toml\n(.*?)^```", DOC.read_text(), re.DOTALL | re.MULTILINE) if "unless" in b]
    path = tmp_path / "agent-legs.toml"
    path.write_text(block)
    engine = PolicyEngine(Policy.from_toml(path))
    assert engine.decide_call("http.request", {"method": "HEAD"}).kind == "allow"
    assert engine.decide_call("http.request", {"method": "DELETE"}).kind == "approve"
    assert engine.decide_call("email.send", {"to": ["x@example.com"], "cc": ["y@other.test"], "bcc": []}).kind == "approve"
