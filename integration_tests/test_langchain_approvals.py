"""Approvals where a LangChain agent runs (issue 16): real ``create_agent`` graphs with scripted models,
real checkpointers (in memory; SQLite across a process restart), parallel tool calls, LangChain's own
``HumanInTheLoopMiddleware``. Every effect is a real file in a real workspace; every decision is checked
on the action log."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agent_legs import ConfigError, Legs
from agent_legs_testing.agents import ScriptedChatModel
from langchain_agent_legs import AgentLegsToolkit

POLICY = {"allow": ["files.*"], "require_approval": ["files.write"]}
CFG = {"configurable": {"thread_id": "thread-1"}}


@pytest.fixture
def legs(tmp_path, captured_spans):
    with Legs(
        workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, tracer_provider=captured_spans.provider
    ) as legs:
        yield legs


def _log(tmp_path: Path) -> list[dict]:
    path = tmp_path / "st/actions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _writes(tmp_path: Path) -> list[dict]:
    return [e for e in _log(tmp_path) if e["action"] == "files.write"]


def _agent(legs: Legs, steps: list, approvals: str = "interrupt", checkpointer=None, **kw):
    model = ScriptedChatModel(steps=steps)
    tools = AgentLegsToolkit(legs=legs, approvals=approvals).get_tools()
    return create_agent(model, tools, checkpointer=checkpointer if checkpointer is not None else InMemorySaver(), **kw), model


def _tool_messages(state) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_parallel_calls_interrupt_once_each_and_resume_together(legs, tmp_path, captured_spans) -> None:
    agent, model = _agent(
        legs,
        [
            [
                ("files_write", {"path": "a.txt", "content": "A"}),
                ("files_write", {"path": "b.txt", "content": "B"}),
                ("files_write", {"path": "c.txt", "content": "C"}),
                ("files_read", {"path": "a.txt"}),
            ],
            "done",
        ],
    )
    out = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2")
    ws = tmp_path / "ws"
    assert not any((ws / n).exists() for n in ("a.txt", "b.txt", "c.txt"))  # paused before anything ran
    interrupts = out.interrupts
    assert len(interrupts) == 3 and len({i.id for i in interrupts}) == 3
    by_path = {i.value["arguments"]["path"]: i for i in interrupts}
    value = by_path["a.txt"].value
    assert json.loads(json.dumps(value)) == value
    assert value["type"] == "agent_legs.approval" and value["action"] == "files.write"
    assert value["tool_name"] == "files_write" and value["tool_call_id"].startswith("call_")
    assert value["rule"] == "policy.require_approval['files.write']" and "reason" in value
    assert value["allowed_decisions"] == ["approve", "reject", "edit"]

    final = agent.invoke(
        Command(
            resume={
                by_path["a.txt"].id: {"type": "approve", "by": "ann"},
                by_path["b.txt"].id: {"type": "reject", "message": "not b, ever", "by": "bob"},
                by_path["c.txt"].id: {"type": "edit", "args": {"path": "c-edited.txt", "content": "C2"}, "by": "cy"},
            }
        ),
        CFG,
        version="v2",
    ).value
    assert (ws / "a.txt").read_text() == "A" and not (ws / "b.txt").exists()
    assert (ws / "c-edited.txt").read_text() == "C2" and not (ws / "c.txt").exists()
    rejected = [m for m in _tool_messages(final) if "approval_denied" in str(m.content)]
    assert len(rejected) == 1 and "not b, ever" in rejected[0].content  # the model receives the message
    assert any("not b, ever" in str(m.content) for m in model.seen[-1])
    approvals = {e["arguments"]["path"]: e["approval"] for e in _writes(tmp_path)}
    assert approvals == {
        "a.txt": {"decision": "approved", "by": "ann", "rule": None},
        "b.txt": {"decision": "rejected", "by": "bob", "rule": None},
        "c-edited.txt": {"decision": "edited", "by": "cy", "rule": None},
    }
    assert len(_writes(tmp_path)) == 3  # each call once
    spans = [s for s in captured_spans.tool_spans() if s.attributes["agent_legs.action"] == "files.write"]
    assert sorted((s.attributes["agent_legs.approval.decision"], s.attributes["agent_legs.approval.by"]) for s in spans) == [
        ("approved", "ann"),
        ("edited", "cy"),
        ("rejected", "bob"),
    ]


def test_resuming_one_of_two_then_the_other_runs_each_once(legs, tmp_path) -> None:
    agent, _ = _agent(
        legs, [[("files_write", {"path": "a.txt", "content": "A"}), ("files_write", {"path": "b.txt", "content": "B"})], "done"]
    )
    first = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts
    a, b = sorted(first, key=lambda i: i.value["arguments"]["path"])
    second = agent.invoke(Command(resume={a.id: {"type": "approve"}}), CFG, version="v2").interrupts
    assert [i.id for i in second] == [b.id]  # still waiting, under the same id
    agent.invoke(Command(resume={b.id: {"type": "approve"}}), CFG, version="v2")
    assert [e["arguments"]["path"] for e in _writes(tmp_path)] == ["a.txt", "b.txt"]


def test_replaying_an_old_checkpoint_never_runs_an_approved_call_twice(legs, tmp_path) -> None:
    agent, _ = _agent(legs, [[("files_write", {"path": "a.txt", "content": "A"})], "done", "done again"])
    (interrupt,) = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts
    paused = agent.get_state(CFG).config  # the checkpoint of the pause
    agent.invoke(Command(resume={interrupt.id: {"type": "approve", "by": "ann"}}), CFG, version="v2")
    (tmp_path / "ws/a.txt").unlink()
    # Time travel: resume the same pause again from its checkpoint, with another decision.
    replay = agent.invoke(Command(resume={interrupt.id: {"type": "approve", "by": "mallory"}}), paused, version="v2").value
    assert not (tmp_path / "ws/a.txt").exists()
    refused = _tool_messages(replay)[-1]
    assert refused.status == "error" and "already decided (approve by ann" in refused.content
    writes = _writes(tmp_path)
    assert [e["outcome"] for e in writes] == ["ok", "approval_denied"]


@pytest.mark.parametrize(
    "answer", [{"type": "yes"}, "sure", {"type": "approve", "extra": True}, {"type": "edit"}, 42, ["approve"]]
)
def test_a_resume_value_of_the_wrong_shape_is_refused(legs, tmp_path, answer) -> None:
    agent, _ = _agent(legs, [[("files_write", {"path": "a.txt", "content": "A"})], "done"])
    (interrupt,) = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts
    final = agent.invoke(Command(resume={interrupt.id: answer}), CFG, version="v2").value
    assert not (tmp_path / "ws/a.txt").exists()
    (message,) = _tool_messages(final)
    assert message.status == "error" and "not understood" in message.content
    assert _writes(tmp_path)[0]["approval"]["decision"] == "rejected"


def test_an_unknown_interrupt_id_runs_nothing(legs, tmp_path) -> None:
    agent, _ = _agent(legs, [[("files_write", {"path": "a.txt", "content": "A"})], "done"])
    (pending,) = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts
    out = agent.invoke(Command(resume={"0" * 32: {"type": "approve"}}), CFG, version="v2")
    assert [i.id for i in out.interrupts] == [pending.id]  # LangGraph ignores it: the call keeps waiting
    assert not (tmp_path / "ws/a.txt").exists() and _writes(tmp_path) == []
    agent.invoke(Command(resume={pending.id: {"type": "approve"}}), CFG, version="v2")
    assert (tmp_path / "ws/a.txt").exists() and len(_writes(tmp_path)) == 1


def test_edits_that_fail_validation_or_policy_run_nothing(legs, tmp_path) -> None:
    agent, _ = _agent(
        legs, [[("files_write", {"path": "a.txt", "content": "A"}), ("files_write", {"path": "b.txt", "content": "B"})], "done"]
    )
    a, b = sorted(
        agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts, key=lambda i: i.value["arguments"]["path"]
    )
    final = agent.invoke(
        Command(
            resume={
                a.id: {"type": "edit", "args": {"path": "a.txt", "nope": 1}},
                b.id: {"type": "edit", "args": {"path": "../escape.txt", "content": "x"}},
            }
        ),
        CFG,
        version="v2",
    ).value
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()
    assert all(m.status == "error" for m in _tool_messages(final))
    assert sorted(e["outcome"] for e in _writes(tmp_path)) == ["denied", "invalid_input"]


def test_no_checkpointer_is_a_clear_error_for_the_developer(legs, tmp_path) -> None:
    model = ScriptedChatModel(steps=[[("files_write", {"path": "a.txt", "content": "A"})], "done"])
    agent = create_agent(model, AgentLegsToolkit(legs=legs, approvals="interrupt").get_tools())
    with pytest.raises(ConfigError, match="needs a checkpointer"):
        agent.invoke({"messages": [("user", "write")]}, CFG)
    assert not (tmp_path / "ws/a.txt").exists()


def test_calls_that_need_no_approval_do_not_interrupt(legs, tmp_path) -> None:
    agent, _ = _agent(legs, [[("files_read", {"path": "x.txt"})], "done"])
    out = agent.invoke({"messages": [("user", "read")]}, CFG, version="v2")
    assert not out.interrupts and _log(tmp_path)[0]["decision"] == "allow"


def test_remembered_approval_covers_later_calls_of_the_thread(legs, tmp_path) -> None:
    agent, _ = _agent(
        legs,
        [
            [("files_write", {"path": "notes/1.txt", "content": "1"})],
            [("files_write", {"path": "notes/2.txt", "content": "2"})],
            [("files_write", {"path": "other.txt", "content": "3"})],
            "done",
        ],
    )
    (first,) = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts
    out = agent.invoke(
        Command(resume={first.id: {"type": "approve", "by": "ann", "remember": "session", "match": {"path": ["notes/*"]}}}),
        CFG,
        version="v2",
    )
    (third,) = out.interrupts  # notes/2.txt ran under the standing rule; other.txt asks
    assert third.value["arguments"]["path"] == "other.txt"
    (rule,) = legs.standing_rules("thread-1")
    assert _writes(tmp_path)[1]["approval"] == {"decision": "approved", "by": "ann", "rule": rule.id}
    legs.revoke_standing_rule(rule.id)
    assert legs.standing_rules("thread-1") == []


def test_an_answer_wins_over_a_standing_rule_made_while_it_waited(legs, tmp_path) -> None:
    agent, _ = _agent(legs, [[("files_write", {"path": "a.txt", "content": "A"})], "done"])
    (pending,) = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").interrupts
    legs.add_standing_rule("files.write", None, scope="session", session="thread-1", by="someone")  # meanwhile
    agent.invoke(Command(resume={pending.id: {"type": "reject", "by": "bob"}}), CFG, version="v2")
    assert not (tmp_path / "ws/a.txt").exists()
    assert _writes(tmp_path)[0]["approval"] == {"decision": "rejected", "by": "bob", "rule": None}


async def test_async_agent_interrupts_and_resumes(legs, tmp_path) -> None:
    agent, _ = _agent(legs, [[("files_write", {"path": "a.txt", "content": "A"})], "done"])
    (pending,) = (await agent.ainvoke({"messages": [("user", "write")]}, CFG, version="v2")).interrupts
    assert not (tmp_path / "ws/a.txt").exists()
    await agent.ainvoke(Command(resume={pending.id: {"type": "approve", "by": "ann"}}), CFG, version="v2")
    assert (tmp_path / "ws/a.txt").read_text() == "A"
    assert _writes(tmp_path)[0]["approval"] == {"decision": "approved", "by": "ann", "rule": None}


RESTART_SCRIPT = """
import json, sqlite3, sys
from langchain.agents import create_agent
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from agent_legs import Legs
from agent_legs_testing.agents import ScriptedChatModel
from langchain_agent_legs import AgentLegsToolkit

phase, root = sys.argv[1], sys.argv[2]
legs = Legs(workspace=root + "/ws", state_dir=root + "/st",
            policy={"allow": ["files.*"], "require_approval": ["files.write"]})
steps = ([[("files_write", {"path": "a.txt", "content": "A"}), ("files_write", {"path": "b.txt", "content": "B"})],
          "never"] if phase == "start" else ["all done"])
conn = sqlite3.connect(root + "/checkpoints.sqlite", check_same_thread=False)
agent = create_agent(ScriptedChatModel(steps=steps), AgentLegsToolkit(legs=legs, approvals="interrupt").get_tools(),
                     checkpointer=SqliteSaver(conn))
cfg = {"configurable": {"thread_id": "restart-thread"}}
if phase == "start":
    out = agent.invoke({"messages": [("user", "write")]}, cfg, version="v2")
    print(json.dumps([{"id": i.id, "value": i.value} for i in out.interrupts]))
else:
    decisions = json.loads(sys.argv[3])
    out = agent.invoke(Command(resume=decisions), cfg, version="v2")
    print(json.dumps({"last": out.value["messages"][-1].content, "interrupts": len(out.interrupts)}))
legs.close()
"""


def test_a_pause_survives_a_process_restart_with_sqlite(tmp_path) -> None:
    import langgraph.checkpoint.sqlite  # noqa: F401  (a test dependency: missing it must fail)

    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(RESTART_SCRIPT))

    def run(phase: str, *rest: str) -> object:
        done = subprocess.run(
            [sys.executable, str(script), phase, str(tmp_path), *rest], capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    interrupts = run("start")  # the first process pauses and exits
    assert len(interrupts) == 2 and not (tmp_path / "ws/a.txt").exists()
    ids = {i["value"]["arguments"]["path"]: i["id"] for i in interrupts}
    decisions = {ids["a.txt"]: {"type": "approve", "by": "ops"}, ids["b.txt"]: {"type": "reject", "by": "ops"}}
    result = run("resume", json.dumps(decisions))  # a new process, a new Legs
    assert result == {"last": "all done", "interrupts": 0}
    assert (tmp_path / "ws/a.txt").read_text() == "A" and not (tmp_path / "ws/b.txt").exists()
    writes = _writes(tmp_path)
    assert sorted((e["arguments"]["path"], e["approval"]["decision"], e["approval"]["by"]) for e in writes) == [
        ("a.txt", "approved", "ops"),
        ("b.txt", "rejected", "ops"),
    ]


# -- HumanInTheLoopMiddleware ------------------------------------------------------------------------


def _hitl_agent(legs: Legs, steps: list, approvals: str = "middleware"):
    toolkit = AgentLegsToolkit(legs=legs, approvals=approvals)
    middleware = HumanInTheLoopMiddleware(interrupt_on=toolkit.interrupt_on(), interrupt_mode="per_call")
    model = ScriptedChatModel(steps=steps)
    return create_agent(model, toolkit.get_tools(), middleware=[middleware], checkpointer=InMemorySaver()), model


def test_interrupt_on_is_generated_from_the_policy(tmp_path) -> None:
    policy = {
        "allow": ["files.*"],
        "require_approval": [{"action": "files.write", "unless": {"path": ["notes/*"]}}, "files.delete"],
    }
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=policy) as legs:
        config = AgentLegsToolkit(legs=legs).interrupt_on()
    assert sorted(config) == ["files_delete", "files_write"]
    assert config["files_write"]["allowed_decisions"] == ["approve", "edit", "reject"]


def test_hitl_middleware_asks_once_and_its_decision_is_the_approval(legs, tmp_path) -> None:
    agent, _ = _hitl_agent(
        legs,
        [
            [
                ("files_write", {"path": "a.txt", "content": "A"}),
                ("files_write", {"path": "b.txt", "content": "B"}),
                ("files_write", {"path": "c.txt", "content": "C"}),
                ("files_read", {"path": "x.txt"}),
            ],
            "done",
        ],
    )
    out = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2")
    assert len(out.interrupts) == 3 and all(i.value["type"] == "tool_approval" for i in out.interrupts)
    by_path = {i.value["args"]["path"]: i.id for i in out.interrupts}
    final = agent.invoke(
        Command(
            resume={
                by_path["a.txt"]: {"type": "approve"},
                by_path["b.txt"]: {"type": "reject", "message": "no"},
                by_path["c.txt"]: {
                    "type": "edit",
                    "edited_action": {"name": "files_write", "args": {"path": "c2.txt", "content": "C2"}},
                },
            }
        ),
        CFG,
        version="v2",
    )
    assert not final.interrupts  # nobody was asked a second time
    ws = tmp_path / "ws"
    assert (ws / "a.txt").exists() and not (ws / "b.txt").exists() and (ws / "c2.txt").exists()
    approvals = {e["arguments"]["path"]: e["approval"]["decision"] for e in _writes(tmp_path)}
    assert approvals == {"a.txt": "approved", "c2.txt": "edited"}  # the rejected call never reached the tool


def test_hitl_middleware_skips_calls_the_policy_exempts(tmp_path) -> None:
    policy = {"allow": ["files.*"], "require_approval": [{"action": "files.write", "unless": {"path": ["notes/*"]}}]}
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=policy) as legs:
        agent, _ = _hitl_agent(
            legs,
            [
                [("files_write", {"path": "notes/a.txt", "content": "A"}), ("files_write", {"path": "b.txt", "content": "B"})],
                "done",
            ],
        )
        out = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2")
        (only,) = out.interrupts
        assert only.value["args"]["path"] == "b.txt"
        assert (tmp_path / "ws/notes/a.txt").exists()


def test_middleware_mode_without_the_middleware_runs_nothing(legs, tmp_path) -> None:
    agent, _ = _agent(legs, [[("files_write", {"path": "a.txt", "content": "A"})], "done"], approvals="middleware")
    final = agent.invoke({"messages": [("user", "write")]}, CFG, version="v2").value
    assert not (tmp_path / "ws/a.txt").exists()
    (message,) = _tool_messages(final)
    assert message.status == "error" and "no HumanInTheLoopMiddleware decision" in message.content


def test_batched_middleware_is_not_taken_for_an_approval(legs, tmp_path) -> None:
    toolkit = AgentLegsToolkit(legs=legs, approvals="middleware")
    middleware = HumanInTheLoopMiddleware(interrupt_on=toolkit.interrupt_on())  # batched: no decision in the tool
    agent = create_agent(
        ScriptedChatModel(steps=[[("files_write", {"path": "a.txt", "content": "A"})], "done"]),
        toolkit.get_tools(),
        middleware=[middleware],
        checkpointer=InMemorySaver(),
    )
    agent.invoke({"messages": [("user", "write")]}, CFG, version="v2")
    agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), CFG, version="v2")
    assert not (tmp_path / "ws/a.txt").exists()
    assert _writes(tmp_path)[0]["outcome"] == "approval_denied"
