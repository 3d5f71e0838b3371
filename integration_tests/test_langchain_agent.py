"""A real LangChain agent (create_agent) drives Agent Legs through the toolkit, end to end."""

from __future__ import annotations

import os

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from agent_legs import Legs
from agent_legs_testing.agents import ScriptedChatModel
from langchain_agent_legs import AgentLegsToolkit


@pytest.fixture
def legs(tmp_path, http_server, captured_spans):
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", tracer_provider=captured_spans.provider,
              policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:
        yield legs


def test_multi_step_task_with_real_effects_and_spans(legs, http_server, captured_spans, tmp_path) -> None:
    model = ScriptedChatModel(steps=[
        [("http_request", {"method": "GET", "url": http_server.url("/json")})],
        [("files_write", {"path": "report/items.md", "content": "# Items\n- alpha\n- beta\n"}),
         ("files_read", {"path": "../../etc/passwd"})],
        [("http_request", {"method": "POST", "url": http_server.url("/echo"), "json": {"report": "report/items.md"}})],
        [("files_read", {"path": "report/items.md"})],
        "The report is saved in report/items.md and posted to the API.",
    ])
    tools = AgentLegsToolkit(legs=legs).get_tools()
    agent = create_agent(model, tools)
    tracer = captured_spans.provider.get_tracer("test-agent")
    with tracer.start_as_current_span("invoke_agent shop-bot") as root:
        state = agent.invoke({"messages": [("user", "Make a report of the items and post it.")]},
                             config={"configurable": {"thread_id": "thread-42"}})

    # effects in the world
    assert (tmp_path / "ws/report/items.md").read_text() == "# Items\n- alpha\n- beta\n"
    posted = [r for r in http_server.requests if r.method == "POST"]
    assert len(posted) == 1 and posted[0].body == b'{"report": "report/items.md"}'
    assert state["messages"][-1].content.startswith("The report is saved")

    # the denied read reached the model as an error ToolMessage, and the agent went on
    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    denied = [m for m in tool_messages if m.status == "error"]
    assert len(denied) == 1 and "escapes the workspace" in denied[0].content and "denied" in denied[0].content
    assert any(isinstance(m, ToolMessage) and m.status == "error" for m in model.seen[2])

    # one span per tool call, nested under the agent's span, with the tool call ids
    spans = captured_spans.tool_spans()
    assert len(spans) == 5 == len(tool_messages)
    assert {s.attributes["gen_ai.tool.call.id"] for s in spans} == {m.tool_call_id for m in tool_messages}
    for s in spans:
        assert s.context.trace_id == root.get_span_context().trace_id
        assert s.parent is not None
        assert s.attributes["agent_legs.session"] == "thread-42"
    assert [s.attributes["agent_legs.outcome"] for s in spans].count("denied") == 1


def test_artifact_is_the_action_result(legs) -> None:
    (tool,) = AgentLegsToolkit(legs=legs, include=["files.write"]).get_tools()
    msg = tool.invoke({"type": "tool_call", "id": "call_x", "name": tool.name,
                       "args": {"path": "a.txt", "content": "hi"}})
    assert msg.content == "Wrote a.txt (2 bytes)"
    assert msg.artifact["ok"] is True and msg.artifact["artifacts"][0]["path"] == "a.txt"


@pytest.mark.real_model
@pytest.mark.skipif(not (os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY")),
                    reason="needs a hosted model API key (the only test that may skip)")
def test_same_scenario_with_a_real_model(legs, http_server, tmp_path) -> None:
    from langchain.chat_models import init_chat_model

    name = "openai:gpt-4o-mini" if os.environ.get("OPENAI_API_KEY") else "anthropic:claude-3-5-haiku-latest"
    agent = create_agent(init_chat_model(name), AgentLegsToolkit(legs=legs).get_tools())
    agent.invoke({"messages": [("user", f"Fetch {http_server.url('/json')} and save the item names, one per "
                                         "line, to report/items.md.")]})
    assert "alpha" in (tmp_path / "ws/report/items.md").read_text()
