"""A real LlamaIndex FunctionAgent drives Agent Legs through the tool spec, end to end."""

from __future__ import annotations

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

from agent_legs import Legs
from agent_legs_testing.agents import (
    OFFICE_DENIED,
    OFFICE_TOOL_CALLS,
    assert_office_effects,
    assert_tool_spans,
    office_task,
    scripted_llamaindex_llm,
)
from llama_index.tools.agent_legs import AgentLegsToolSpec

# LlamaIndex workflows inspect.getmembers() the (pydantic) agent: deprecation noise that is not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")


async def _run_agent(agent: FunctionAgent, task: str, tracer, span_name: str):
    results: list[ToolCallResult] = []
    with tracer.start_as_current_span(span_name) as root:
        handler = agent.run(user_msg=task)
        async for event in handler.stream_events():
            if isinstance(event, ToolCallResult):
                results.append(event)
        answer = await handler
    return root, results, answer


async def test_function_agent_files_and_http(tmp_path, http_server, captured_spans) -> None:
    legs = Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        tracer_provider=captured_spans.provider,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    )
    try:
        llm = scripted_llamaindex_llm(
            [
                [("http_request", {"method": "GET", "url": http_server.url("/json")})],
                [("files_write", {"path": "out/items.txt", "content": "alpha\nbeta\n"})],
                [("files_read", {"path": "/etc/passwd"})],
                [("http_request", {"method": "POST", "url": http_server.url("/echo"), "body": "items saved"})],
                "All done.",
            ]
        )
        agent = FunctionAgent(tools=AgentLegsToolSpec(legs=legs, session="li-1").to_tool_list(), llm=llm)
        root, results, answer = await _run_agent(
            agent, "Save the items and tell the API.", captured_spans.provider.get_tracer("test-agent"), "invoke_agent li"
        )
    finally:
        legs.close()

    assert "All done." in str(answer)
    assert (tmp_path / "ws/out/items.txt").read_text() == "alpha\nbeta\n"
    assert [r.body for r in http_server.requests if r.method == "POST"] == [b"items saved"]
    # the denied read came back to the model as a readable error, and the agent went on
    errors = [r for r in results if r.tool_output.is_error]
    assert len(errors) == 1 and "outside the workspace" in errors[0].tool_output.content
    assert errors[0].tool_output.raw_output["error"]["type"] == "denied"
    seen = llm._scripted_state["seen"][3]
    assert any(m.role == "tool" and "outside the workspace" in str(m.content) for m in seen)
    # one span per tool call, children of the agent's span, with LlamaIndex's tool call ids
    assert_tool_spans(captured_spans.tool_spans(), root, {r.tool_id for r in results}, session="li-1")


async def test_function_agent_office_task_across_all_action_families(office_world, captured_spans, tmp_path) -> None:
    """Inbox -> browser + API -> files -> sandbox -> API -> approved email, with one denied call."""
    async with Legs(**office_world.legs_kwargs(tmp_path, captured_spans.provider)) as legs:
        agent = FunctionAgent(
            tools=AgentLegsToolSpec(legs=legs, session="li-office").to_tool_list(),
            llm=scripted_llamaindex_llm(office_task(office_world)),
        )
        root, results, answer = await _run_agent(
            agent, office_world.task, captured_spans.provider.get_tracer("test-agent"), "invoke_agent li-office"
        )

    assert str(answer).startswith("Done")
    assert_office_effects(office_world, tmp_path / "ws")
    assert len(results) == OFFICE_TOOL_CALLS
    errors = [r for r in results if r.tool_output.is_error]
    assert len(errors) == OFFICE_DENIED and "escapes the workspace" in errors[0].tool_output.content
    spans = captured_spans.tool_spans()
    assert {s.attributes["gen_ai.tool.name"].split("_")[0] for s in spans} == {"files", "http", "browser", "code", "email"}
    assert_tool_spans(spans, root, {r.tool_id for r in results}, session="li-office")


TALL_PAGE = (
    b"<html><body style='margin:0'><div style='height:4000px;background:linear-gradient(red,blue)'>tall page</div></body></html>"
)
FIGURE = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')"


async def test_screenshots_and_figures_reach_the_model_as_image_blocks(
    http_server, sandbox_image, captured_spans, tmp_path
) -> None:
    """15.6: a real Chromium full-page screenshot and a real matplotlib figure come back as ImageBlocks
    (bounded in size) that the LLM receives in its tool messages; images=False gives text only."""
    import io

    from llama_index.core.base.llms.types import ImageBlock
    from PIL import Image

    http_server.routes["/tall"] = lambda h, r: h.send_body(200, TALL_PAGE, "text/html")
    steps = [
        [("browser_navigate", {"url": http_server.url("/tall")})],
        [("browser_screenshot", {"full_page": True})],
        [("code_run", {"code": FIGURE})],
        "done",
    ]
    async with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        settings={"code": {"pool_size": 0}},
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    ) as legs:
        llm = scripted_llamaindex_llm(steps)
        agent = FunctionAgent(tools=AgentLegsToolSpec(legs=legs, include=["browser.*", "code.*"]).to_tool_list(), llm=llm)
        _, results, _ = await _run_agent(agent, "look and plot", captured_spans.provider.get_tracer("t"), "li-img")
        blind = FunctionAgent(
            tools=AgentLegsToolSpec(legs=legs, include=["browser.*", "code.*"], images=False).to_tool_list(),
            llm=scripted_llamaindex_llm(steps),
        )
        _, blind_results, _ = await _run_agent(blind, "look and plot", captured_spans.provider.get_tracer("t"), "li-blind")

    _, shot, figure = (r.tool_output for r in results)
    (shot_image,) = [b for b in shot.blocks if isinstance(b, ImageBlock)]
    picture = Image.open(io.BytesIO(shot_image.resolve_image().read()))
    assert shot_image.image_mimetype == "image/png" and max(picture.size) <= 1568 and picture.size[1] > picture.size[0]
    with Image.open(tmp_path / "ws" / shot.raw_output["artifacts"][0]["path"]) as original:
        assert original.size[1] >= 4000
    assert "screenshots/" in shot.content
    (figure_image,) = [b for b in figure.blocks if isinstance(b, ImageBlock)]
    assert Image.open(io.BytesIO(figure_image.resolve_image().read())).format == "PNG"
    # the LLM received the images in the tool messages of its next turns
    seen = llm._scripted_state["seen"]
    assert any(isinstance(b, ImageBlock) for m in seen[2] if m.role == "tool" for b in m.blocks)
    assert any(isinstance(b, ImageBlock) for m in seen[3] if m.role == "tool" for b in m.blocks)
    assert not any(isinstance(b, ImageBlock) for r in blind_results for b in r.tool_output.blocks)
    assert "screenshots/" in blind_results[1].tool_output.content


async def test_code_kernels_follow_the_workflow_run(sandbox_image, tmp_path) -> None:
    """15.5: each agent.run() is its own session (a variable set in run 1 is absent in run 2); a run that
    continues the conversation with the same Context shares it."""
    from llama_index.core.workflow import Context

    async with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", settings={"code": {"pool_size": 0}}) as legs:
        tools = AgentLegsToolSpec(legs=legs, include=["code.run"]).to_tool_list()

        async def run(code: str, ctx: Context | None = None, agent: FunctionAgent | None = None) -> str:
            agent = agent or FunctionAgent(tools=tools, llm=scripted_llamaindex_llm([[("code_run", {"code": code})], "done"]))
            results: list[ToolCallResult] = []
            handler = agent.run(user_msg="compute", ctx=ctx)
            async for event in handler.stream_events():
                if isinstance(event, ToolCallResult):
                    results.append(event)
            await handler
            return results[0].tool_output.content

        assert "41" in await run("x = 41\nx")
        assert "NameError" in await run("x + 1")  # another run: a fresh kernel
        agent = FunctionAgent(
            tools=tools,
            llm=scripted_llamaindex_llm([[("code_run", {"code": "y = 41"})], "ok", [("code_run", {"code": "y + 1"})], "done"]),
        )
        ctx = Context(agent)
        await run("", ctx, agent)
        assert "42" in await run("", ctx, agent)
