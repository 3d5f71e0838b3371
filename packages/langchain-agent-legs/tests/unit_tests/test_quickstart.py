"""docs/quickstart-langchain.md runs as written; only the hosted model is swapped for a scripted one."""

from __future__ import annotations

from pathlib import Path

from agent_legs_testing.agents import ScriptedChatModel
from agent_legs_testing.quickstart import exec_block, python_blocks

DOC = Path(__file__).resolve().parents[4] / "docs" / "quickstart-langchain.md"
HOSTED = '"openai:gpt-4o-mini"'


def _blocks() -> list[str]:
    return python_blocks(DOC)


def _exec(code: str, **names: object) -> dict[str, object]:
    return exec_block(code, DOC, **names)


def test_every_block_is_covered() -> None:
    assert len(_blocks()) == 6


def test_first_agent(in_tmp, capsys) -> None:
    code = _blocks()[0]
    assert HOSTED in code
    model = ScriptedChatModel(
        steps=[[("files_write", {"path": "zen.txt", "content": "Design for failure."})], "Saved the zen to zen.txt."]
    )
    ns = _exec(code.replace(HOSTED, "MODEL"), MODEL=model)
    assert (in_tmp / "agent-workspace/zen.txt").read_text() == "Design for failure."
    assert "Saved the zen" in capsys.readouterr().out
    assert [t.name for t in ns["tools"]][:2] == ["files_copy", "files_delete"]
    assert (in_tmp / "state/agent-legs/actions.jsonl").read_text().count("thread-1") == 1


def test_async_agent(in_tmp, capsys) -> None:
    model = ScriptedChatModel(
        steps=[[("files_write", {"path": "hello.txt", "content": "hello"})], [("files_list", {})], "hello.txt is there."]
    )
    _exec(_blocks()[1].replace(HOSTED, "MODEL"), MODEL=model)
    assert (in_tmp / "agent-workspace/hello.txt").read_text() == "hello"
    assert "hello.txt is there." in capsys.readouterr().out


def test_approver_block(in_tmp) -> None:
    ns = _exec(_blocks()[2])
    legs = ns["legs"]
    try:
        assert legs.policy.email.allow_recipients == ["*@example.com"] and legs.approver is ns["approve"]
    finally:
        legs.close()


def test_interrupt_and_middleware_blocks(in_tmp, capsys) -> None:
    import json

    model = ScriptedChatModel(steps=[[("files_write", {"path": "haiku.txt", "content": "old pond"})], "Saved."])
    ns = _exec(_blocks()[3].replace(HOSTED, "MODEL"), MODEL=model)
    out = capsys.readouterr().out
    assert "files.write {'path': 'haiku.txt'" in out and "Saved." in out
    assert (in_tmp / "agent-workspace/haiku.txt").read_text() == "old pond"
    log = [json.loads(line) for line in (in_tmp / "state/agent-legs/actions.jsonl").read_text().splitlines()]
    assert log[-1]["approval"] == {"decision": "approved", "by": "ana", "rule": None}

    ns["MODEL"] = ScriptedChatModel(steps=[[("files_write", {"path": "b.txt", "content": "b"})], "Saved b."])
    code = _blocks()[4].replace(HOSTED, "MODEL")
    exec(compile(code, "quickstart", "exec"), ns)
    agent, config = ns["agent"], {"configurable": {"thread_id": "mw"}}
    (pending,) = agent.invoke({"messages": [("user", "b")]}, config, version="v2").interrupts
    assert pending.value["type"] == "tool_approval" and pending.value["name"] == "files_write"
    agent.invoke(ns["Command"](resume={pending.id: {"type": "approve"}}), config, version="v2")
    assert (in_tmp / "agent-workspace/b.txt").read_text() == "b"
    ns["legs"].close()


def test_traces_block(in_tmp, monkeypatch) -> None:
    from opentelemetry import trace

    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # process-global: keep it clean
    ns = _exec(_blocks()[5])
    ns["legs"].close()
