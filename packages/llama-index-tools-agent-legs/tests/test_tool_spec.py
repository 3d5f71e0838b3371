"""AgentLegsToolSpec: FunctionTools generated from the registry, errors as readable outputs."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from llama_index.core.tools import FunctionTool, ToolOutput
from pydantic import BaseModel, ConfigDict, Field

import llama_index.tools.agent_legs as pkg
from agent_legs import ActionOutput, ActionRegistry, Legs, action
from llama_index.tools.agent_legs import AgentLegsToolSpec

# LlamaIndex workflows inspect.getmembers() the (pydantic) agent: deprecation noise that is not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")


@pytest.fixture
def legs(tmp_path: Path):
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st") as legs:
        yield legs


def _log(legs: Legs) -> list[dict]:
    return [json.loads(line) for line in (legs.state_dir / "actions.jsonl").read_text().splitlines()]


def test_public_api() -> None:
    assert pkg.__all__ == ["AgentLegsToolSpec"]


def test_pep420_namespace_package() -> None:
    # only our leaf package has an __init__.py, so other llama-index-* distributions share the namespace
    src = Path(pkg.__file__).resolve().parents[2]
    assert (src / "tools/agent_legs/__init__.py").exists()
    assert not (src / "__init__.py").exists() and not (src / "tools/__init__.py").exists()
    import llama_index.tools

    assert len(list(llama_index.tools.__path__)) >= 1 and getattr(llama_index.tools, "__file__", None) is None


def test_one_function_tool_per_action(legs) -> None:
    tools = AgentLegsToolSpec(legs=legs).to_tool_list()
    offered = [a for a in legs.actions if a.family != "email"]  # no email settings: not offered
    assert [t.metadata.name for t in tools] == [a.tool_name for a in offered]
    for tool, spec in zip(tools, offered, strict=True):
        assert isinstance(tool, FunctionTool)
        # the fn_schema validates like the core's input model (a subclass showing the model-facing schema)
        assert tool.metadata.description == spec.description and issubclass(tool.metadata.fn_schema, spec.input_model)
        # what a function-calling LLM is given: the core's own JSON schema
        params = tool.metadata.get_parameters_dict()
        assert set(params["properties"]) == set(spec.input_model.model_json_schema().get("properties", {}))
        assert tool.metadata.to_openai_tool()["function"]["name"] == spec.tool_name
        assert tool.fn is not None and tool.async_fn is not None


def test_include_exclude_and_spec_functions(legs) -> None:
    names = [t.metadata.name for t in AgentLegsToolSpec(legs=legs, include=["files.*"], exclude=["files_delete"]).to_tool_list()]
    assert "files_read" in names and "files_delete" not in names and "http_request" not in names
    assert [t.metadata.name for t in AgentLegsToolSpec(legs=legs).to_tool_list(spec_functions=["files_read"])] == ["files_read"]


def test_sync_and_async_calls(legs, tmp_path) -> None:
    write, read = AgentLegsToolSpec(legs=legs, include=["files.write", "files.read"], session="s1").to_tool_list()[::-1]
    assert (write.metadata.name, read.metadata.name) == ("files_write", "files_read")
    out = write.call(path="a.txt", content="hello")
    assert isinstance(out, ToolOutput) and not out.is_error and out.content == "Wrote a.txt (5 bytes)"
    assert out.raw_output["ok"] is True and out.raw_input == {"args": (), "kwargs": {"path": "a.txt", "content": "hello"}}
    import asyncio

    out = asyncio.run(read.acall(path="a.txt"))
    assert out.content == "hello" and out.tool_name == "files_read"
    assert (tmp_path / "ws/a.txt").read_text() == "hello"
    assert [(e["action"], e["session"]) for e in _log(legs)] == [("files.write", "s1"), ("files.read", "s1")]


def test_errors_are_readable_outputs_not_exceptions(legs) -> None:
    (read,) = AgentLegsToolSpec(legs=legs, include=["files.read"]).to_tool_list()
    out = read.call(path="../secret")
    assert out.is_error and "Error (denied)" in out.content and "escapes the workspace" in out.content
    assert out.raw_output["error"]["type"] == "denied"
    out = read.call(pth="x")  # a model's typo: the core's validation message, not a TypeError
    assert out.is_error and "invalid_input" in out.content and "path" in out.content
    out = read.call(path="missing.txt")
    assert out.is_error and "not_found" in out.raw_output["error"]["type"]


class _PingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="What to echo.")


def test_new_core_action_appears_without_adapter_change(tmp_path) -> None:
    registry = ActionRegistry()

    @action("ping.pong", description="Echo the text (registered only in this test).", registry=registry)
    async def ping(ctx, args: _PingIn) -> ActionOutput:
        return ActionOutput(output=f"pong {args.text}")

    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy={"allow": ["ping.*"]}, registry=registry) as legs:
        (tool,) = AgentLegsToolSpec(legs=legs).to_tool_list()
        assert tool.metadata.name == "ping_pong" and issubclass(tool.metadata.fn_schema, _PingIn)
        assert tool.call(text="y").content == "pong y"


def test_adapter_is_thin() -> None:
    import llama_index.tools.agent_legs._approval as approval
    from llama_index.tools.agent_legs import base

    source = inspect.getsource(base) + inspect.getsource(pkg)
    for name in ("files.read", "files_read", "http.request", "browser.navigate", "code.run", "email.send"):
        assert name not in source + inspect.getsource(approval)  # approval: no per-action code either
    # issue 16 added the approvals plumbing (~10 statements); the waiting itself lives in _approval.
    # Counted in statements, not lines: `ruff format` must not change the measure.
    import ast

    assert sum(isinstance(n, ast.stmt) for n in ast.walk(ast.parse(source))) < 95


async def test_call_id_from_the_agent_workflow(tmp_path) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    from agent_legs_testing.agents import scripted_llamaindex_llm

    async with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st") as legs:
        llm = scripted_llamaindex_llm(
            [[("files_write", {"path": "a.txt", "content": "x"}), ("files_read", {"path": "a.txt"})], "ok"]
        )
        agent = FunctionAgent(tools=AgentLegsToolSpec(legs=legs).to_tool_list(), llm=llm)
        assert "ok" in str(await agent.run(user_msg="go"))
        log = _log(legs)
    # the ids the model gave its tool calls reach the action (span attribute and idempotency key)
    assert sorted((e["action"], e["call_id"]) for e in log) == [("files.read", "call_0_1"), ("files.write", "call_0_0")]


def test_direct_calls_have_no_call_id(legs) -> None:
    (write,) = AgentLegsToolSpec(legs=legs, include=["files.write"]).to_tool_list()
    write.call(path="b.txt", content="x")
    assert _log(legs)[-1]["call_id"] is None
