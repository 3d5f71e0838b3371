"""A real LangChain agent (create_agent) drives Agent Legs through the toolkit, end to end."""

from __future__ import annotations

import os

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from agent_legs import Legs
from agent_legs_testing.agents import (
    OFFICE_DENIED,
    OFFICE_TOOL_CALLS,
    ScriptedChatModel,
    assert_office_effects,
    assert_tool_spans,
    office_task,
)
from langchain_agent_legs import AgentLegsToolkit


@pytest.fixture
def legs(tmp_path, http_server, captured_spans):
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        tracer_provider=captured_spans.provider,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    ) as legs:
        yield legs


def _tool_messages(state: dict) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_files_and_http_task_with_real_effects_and_spans(legs, http_server, captured_spans, tmp_path) -> None:
    model = ScriptedChatModel(
        steps=[
            [("http_request", {"method": "GET", "url": http_server.url("/json")})],
            [
                ("files_write", {"path": "report/items.md", "content": "# Items\n- alpha\n- beta\n"}),
                ("files_read", {"path": "../../etc/passwd"}),
            ],
            [("http_request", {"method": "POST", "url": http_server.url("/echo"), "json": {"report": "report/items.md"}})],
            [("files_read", {"path": "report/items.md"})],
            "The report is saved in report/items.md and posted to the API.",
        ]
    )
    agent = create_agent(model, AgentLegsToolkit(legs=legs).get_tools())
    tracer = captured_spans.provider.get_tracer("test-agent")
    with tracer.start_as_current_span("invoke_agent shop-bot") as root:
        state = agent.invoke(
            {"messages": [("user", "Make a report of the items and post it.")]},
            config={"configurable": {"thread_id": "thread-42"}},
        )

    # effects in the world
    assert (tmp_path / "ws/report/items.md").read_text() == "# Items\n- alpha\n- beta\n"
    posted = [r for r in http_server.requests if r.method == "POST"]
    assert len(posted) == 1 and posted[0].body == b'{"report": "report/items.md"}'
    assert state["messages"][-1].content.startswith("The report is saved")

    # the denied read reached the model as an error ToolMessage, and the agent went on
    tool_messages = _tool_messages(state)
    denied = [m for m in tool_messages if m.status == "error"]
    assert len(denied) == 1 and "escapes the workspace" in denied[0].content and "denied" in denied[0].content
    assert denied[0].artifact["error"]["type"] == "denied"
    assert any(isinstance(m, ToolMessage) and m.status == "error" for m in model.seen[2])

    # one span per tool call, children of the agent's span, with the tool call ids and the thread as session
    spans = captured_spans.tool_spans()
    assert len(tool_messages) == 5
    assert_tool_spans(spans, root, {m.tool_call_id for m in tool_messages}, session="thread-42")
    assert [s.attributes["agent_legs.outcome"] for s in spans].count("denied") == 1


def test_office_task_across_all_action_families(office_world, captured_spans, tmp_path) -> None:
    """Inbox -> browser + API -> files -> sandbox -> API -> approved email, with one denied call."""
    with Legs(**office_world.legs_kwargs(tmp_path, captured_spans.provider)) as legs:
        model = ScriptedChatModel(steps=office_task(office_world))
        agent = create_agent(model, AgentLegsToolkit(legs=legs).get_tools())
        tracer = captured_spans.provider.get_tracer("test-agent")
        with tracer.start_as_current_span("invoke_agent office-bot") as root:
            state = agent.invoke(
                {"messages": [("user", office_world.task)]}, config={"configurable": {"thread_id": "office-thread"}}
            )

    assert_office_effects(office_world, tmp_path / "ws")
    tool_messages = _tool_messages(state)
    assert len(tool_messages) == OFFICE_TOOL_CALLS
    errors = [m for m in tool_messages if m.status == "error"]
    assert len(errors) == OFFICE_DENIED and "escapes the workspace" in errors[0].content
    assert state["messages"][-1].content.startswith("Done")
    families = {s.attributes["gen_ai.tool.name"].split("_")[0] for s in captured_spans.tool_spans()}
    assert families == {"files", "http", "browser", "code", "email"}
    assert_tool_spans(captured_spans.tool_spans(), root, {m.tool_call_id for m in tool_messages}, session="office-thread")


async def test_async_agent_runs_tools_on_the_callers_loop(legs, http_server, captured_spans, tmp_path) -> None:
    model = ScriptedChatModel(
        steps=[
            [
                ("http_request", {"method": "GET", "url": http_server.url("/json")}),
                ("files_write", {"path": "a.txt", "content": "async"}),
            ],
            "done",
        ]
    )
    agent = create_agent(model, AgentLegsToolkit(legs=legs, session="fixed").get_tools())
    tracer = captured_spans.provider.get_tracer("test-agent")
    with tracer.start_as_current_span("invoke_agent async-bot") as root:
        state = await agent.ainvoke({"messages": [("user", "go")]}, config={"configurable": {"thread_id": "ignored"}})
    assert (tmp_path / "ws/a.txt").read_text() == "async"
    assert [r.path for r in http_server.requests] == ["/json"]
    assert_tool_spans(captured_spans.tool_spans(), root, {m.tool_call_id for m in _tool_messages(state)}, session="fixed")


def test_artifact_is_the_action_result(legs) -> None:
    (tool,) = AgentLegsToolkit(legs=legs, include=["files.write"]).get_tools()
    msg = tool.invoke({"type": "tool_call", "id": "call_x", "name": tool.name, "args": {"path": "a.txt", "content": "hi"}})
    assert msg.content == "Wrote a.txt (2 bytes)"
    assert msg.artifact["ok"] is True and msg.artifact["artifacts"][0]["path"] == "a.txt"


TALL_PAGE = (
    b"<html><body style='margin:0'><div style='height:4000px;background:linear-gradient(red,blue)'>tall page</div></body></html>"
)
FIGURE = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')"


def _image_blocks(message: ToolMessage) -> list[dict]:
    return (
        [b for b in message.content if isinstance(b, dict) and b.get("type") == "image"]
        if isinstance(message.content, list)
        else []
    )


def _picture(block: dict):
    import base64
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(block["base64"])))


def test_screenshots_and_figures_reach_the_model_as_images(http_server, sandbox_image, tmp_path) -> None:
    """15.6: a real Chromium full-page screenshot (800x4000) and a real matplotlib figure from code.run
    come back as standard image blocks, bounded in size, and the model receives them."""
    http_server.routes["/tall"] = lambda h, r: h.send_body(200, TALL_PAGE, "text/html")
    steps = [
        [("browser_navigate", {"url": http_server.url("/tall")})],
        [("browser_screenshot", {"full_page": True})],
        [("code_run", {"code": FIGURE})],
        "done",
    ]
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        settings={"code": {"pool_size": 0}},
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    ) as legs:
        model = ScriptedChatModel(steps=steps)
        state = create_agent(model, AgentLegsToolkit(legs=legs, include=["browser.*", "code.*"]).get_tools()).invoke(
            {"messages": [("user", "look at the page and plot the squares")]}
        )
        blind = ScriptedChatModel(steps=steps)
        blind_state = create_agent(
            blind, AgentLegsToolkit(legs=legs, include=["browser.*", "code.*"], images=False).get_tools()
        ).invoke({"messages": [("user", "the same, for a model without vision")]})

    _, shot, figure = _tool_messages(state)
    assert shot.status == "success" and shot.content[0]["type"] == "text" and "screenshots/" in shot.content[0]["text"]
    (shot_block,) = _image_blocks(shot)
    saved = shot.artifact["artifacts"][0]["path"]
    from PIL import Image

    with Image.open(tmp_path / "ws" / saved) as original:
        assert original.size[1] >= 4000  # the full page, as saved in the workspace
    picture = _picture(shot_block)
    assert shot_block["mime_type"] == "image/png" and max(picture.size) <= 1568  # downscaled for the model
    assert picture.size[1] > picture.size[0]  # the page's shape is kept
    (figure_block,) = _image_blocks(figure)
    assert figure_block["mime_type"] == "image/png" and _picture(figure_block).size[0] > 100
    # what the model received in its next turns
    assert _image_blocks(model.seen[2][-1]) == [shot_block]
    assert _image_blocks(model.seen[3][-1]) == [figure_block]
    # images=False: text only, naming the file
    _, blind_shot, blind_figure = _tool_messages(blind_state)
    assert isinstance(blind_shot.content, str) and "screenshots/" in blind_shot.content
    assert isinstance(blind_figure.content, str) and "figures/" in blind_figure.content


def test_code_kernels_follow_the_agent_run(http_server, sandbox_image, tmp_path) -> None:
    """15.5: without a thread id each invoke is its own session (a variable set in run 1 is absent in
    run 2); the same thread id shares the session."""

    def run(code: str, config: dict | None = None) -> str:
        model = ScriptedChatModel(steps=[[("code_run", {"code": code})], "done"])
        state = create_agent(model, AgentLegsToolkit(legs=legs, include=["code.run"]).get_tools()).invoke(
            {"messages": [("user", "compute")]}, config=config
        )
        (message,) = _tool_messages(state)
        return str(message.content)

    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", settings={"code": {"pool_size": 0}}) as legs:
        assert "41" in run("x = 41\nx")
        assert "NameError" in run("x + 1")  # another run, another user: a fresh kernel
        thread = {"configurable": {"thread_id": "conversation-7"}}
        run("y = 41", thread)
        assert "42" in run("y + 1", thread)


def _real_model() -> str | None:
    if os.environ.get("AGENT_LEGS_TEST_MODEL"):
        return os.environ["AGENT_LEGS_TEST_MODEL"]
    if os.environ.get("OPENAI_API_KEY"):
        return "openai:gpt-4o-mini"
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic:claude-haiku-4-5"
    return None


@pytest.mark.real_model
@pytest.mark.skipif(
    not (os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY")),
    reason="needs OPENAI_API_KEY or ANTHROPIC_API_KEY (real-model tests are the only ones that may skip)",
)
def test_office_task_with_a_real_model(office_world, captured_spans, tmp_path) -> None:
    """The same task, decided by a hosted model (AGENT_LEGS_TEST_MODEL=provider:name picks one)."""
    from langchain.chat_models import init_chat_model

    name = _real_model()
    assert name
    try:
        chat = init_chat_model(name, temperature=0)
    except ImportError as exc:
        pytest.fail(
            f"{name} needs its LangChain provider package: {exc} (pip install langchain-openai or langchain-anthropic)",
            pytrace=False,
        )
    with Legs(**office_world.legs_kwargs(tmp_path, captured_spans.provider)) as legs:
        agent = create_agent(chat, AgentLegsToolkit(legs=legs).get_tools())
        state = agent.invoke(
            {"messages": [("user", office_world.task)]},
            config={"configurable": {"thread_id": "office-thread"}, "recursion_limit": 60},
        )
    ws = tmp_path / "ws"
    # a real model phrases things its own way: check the effects, not the exact bytes
    prices = (ws / "report/prices.csv").read_text()
    assert "Widget" in prices and "Gadget" in prices
    assert (ws / "report/total.txt").read_text().strip() in {"12.50", "12.5"}
    assert any(r.method == "POST" and b"12.5" in r.body for r in office_world.api.requests)
    assert office_world.smtp.messages and office_world.smtp.messages[0]["rcpt"] == ["team@example.com"]
    spans = captured_spans.tool_spans()
    assert len(spans) == len(_tool_messages(state))
