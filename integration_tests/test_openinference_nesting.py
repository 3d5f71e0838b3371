"""Our execute_tool span nests under OpenInference's LangChain TOOL span (which it does not make current)."""

from __future__ import annotations

from langchain.agents import create_agent
from openinference.instrumentation.langchain import LangChainInstrumentor

from agent_legs import Legs
from agent_legs_testing.agents import ScriptedChatModel
from langchain_agent_legs import AgentLegsToolkit


def test_nested_under_openinference_tool_span(tmp_path, captured_spans) -> None:
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=captured_spans.provider)
    try:
        with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", tracer_provider=captured_spans.provider) as legs:
            model = ScriptedChatModel(steps=[[("files_write", {"path": "a.txt", "content": "x"})], "done"])
            create_agent(model, AgentLegsToolkit(legs=legs).get_tools()).invoke({"messages": [("user", "go")]})
    finally:
        instrumentor.uninstrument()
    (ours,) = captured_spans.tool_spans()
    tool_spans = [s for s in captured_spans.spans if (s.attributes or {}).get("openinference.span.kind") == "TOOL"]
    assert tool_spans, [s.name for s in captured_spans.spans]
    assert ours.parent is not None and ours.parent.span_id == tool_spans[0].context.span_id
