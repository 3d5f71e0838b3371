"""A real LlamaIndex FunctionAgent drives Agent Legs through the tool spec, end to end."""

from __future__ import annotations

from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

from agent_legs import Legs
from agent_legs_testing.agents import scripted_llamaindex_llm
from llama_index.tools.agent_legs import AgentLegsToolSpec


async def test_function_agent_multi_step(tmp_path, http_server, captured_spans) -> None:
    legs = Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", tracer_provider=captured_spans.provider,
                policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}})
    try:
        llm = scripted_llamaindex_llm([
            [("http_request", {"method": "GET", "url": http_server.url("/json")})],
            [("files_write", {"path": "out/items.txt", "content": "alpha\nbeta\n"})],
            [("files_read", {"path": "/etc/passwd"})],
            [("http_request", {"method": "POST", "url": http_server.url("/echo"), "body": "items saved"})],
            "All done.",
        ])
        agent = FunctionAgent(tools=AgentLegsToolSpec(legs=legs, session="li-1").to_tool_list(), llm=llm)
        tracer = captured_spans.provider.get_tracer("test-agent")
        results = []
        with tracer.start_as_current_span("invoke_agent li") as root:
            handler = agent.run(user_msg="Save the items and tell the API.")
            async for event in handler.stream_events():
                if isinstance(event, ToolCallResult):
                    results.append(event)
            answer = await handler
    finally:
        legs.close()

    assert "All done." in str(answer)
    assert (tmp_path / "ws/out/items.txt").read_text() == "alpha\nbeta\n"
    assert [r.body for r in http_server.requests if r.method == "POST"] == [b"items saved"]
    errors = [r for r in results if r.tool_output.is_error]
    assert len(errors) == 1 and "outside the workspace" in errors[0].tool_output.content
    spans = captured_spans.tool_spans()
    assert len(spans) == 4
    assert all(s.context.trace_id == root.get_span_context().trace_id for s in spans)
    assert all(s.attributes["agent_legs.session"] == "li-1" for s in spans)
