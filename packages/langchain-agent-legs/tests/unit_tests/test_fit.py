"""Issue 15 (4, 5, 7): tools that match the policy, sessions that follow the agent run, strict schemas.

Real ``Legs``, a real HTTP server on 127.0.0.1, a real ``create_agent`` graph and a real LlamaIndex
``FunctionAgent`` with scripted models. Images (15.6) are covered with real Chromium and the real
sandbox in ``integration_tests/test_langchain_agent.py`` and ``test_llamaindex_agent.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from lc_shared import LEGS, SERVER

from agent_legs import ConfigError, Legs
from agent_legs._schema import strict_problems
from agent_legs_testing.agents import ScriptedChatModel, scripted_llamaindex_llm
from langchain_agent_legs import AgentLegsTool, AgentLegsToolkit
from llama_index.tools.agent_legs import AgentLegsToolSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

SMTP_ONLY = {"email": {"from_address": "bot@example.com", "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"}}}


def _legs(tmp_path: Path, **kwargs: Any) -> Legs:
    return Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", **kwargs)


def _log(legs: Legs) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (legs.state_dir / "actions.jsonl").read_text().splitlines()]


# -- 15.4 tools that match the policy ---------------------------------------------------------------
def test_denied_and_unconfigured_actions_are_not_offered(tmp_path) -> None:
    with _legs(
        tmp_path,
        policy={"allow": ["files.*", "http.request", "email.*"], "deny": ["files.delete"], "require_approval": ["email.send"]},
        settings=SMTP_ONLY,
    ) as legs:
        lc = [t.name for t in AgentLegsToolkit(legs=legs).get_tools()]
        li = [t.metadata.name for t in AgentLegsToolSpec(legs=legs).to_tool_list()]
    expected = [
        "email_send",
        "files_copy",
        "files_edit",
        "files_list",
        "files_move",
        "files_read",
        "files_search",
        "files_write",
        "http_request",
    ]
    # email.send needs approval (offered); list/read need IMAP (unset); files.delete is denied;
    # browser.* and code.* are not in allow
    assert lc == li == expected


def test_a_read_only_workspace_offers_no_file_changes(tmp_path) -> None:
    with _legs(tmp_path, policy={"allow": ["files.*"], "files": {"read_only": True}}) as legs:
        assert [t.name for t in AgentLegsToolkit(legs=legs).get_tools()] == ["files_list", "files_read", "files_search"]
        with pytest.raises(ConfigError, match=r"files\.write: denied by policy\.files\.read_only"):
            AgentLegsToolSpec(legs=legs, include=["files.write"]).to_tool_list()


def test_http_method_enum_follows_the_policy(tmp_path) -> None:
    with _legs(tmp_path, policy={"http": {"methods": ["GET", "HEAD"]}}) as legs:
        (lc,) = AgentLegsToolkit(legs=legs, include=["http.request"]).get_tools()
        (li,) = AgentLegsToolSpec(legs=legs, include=["http.request"]).to_tool_list()
        assert convert_to_openai_tool(lc)["function"]["parameters"]["properties"]["method"]["enum"] == ["GET", "HEAD"]
        assert li.metadata.get_parameters_dict()["properties"]["method"]["enum"] == ["GET", "HEAD"]
    with _legs(tmp_path, policy={"http": {"methods": []}}) as legs:  # no method allowed: no usable tool
        assert "http_request" not in [t.name for t in AgentLegsToolkit(legs=legs).get_tools()]
        with pytest.raises(ConfigError, match=r"http\.request: the policy allows no value of 'method'"):
            AgentLegsToolkit(legs=legs, include=["http.request"]).get_tools()


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"include": ["file.*"]}, "include entry 'file.*' matches no action; did you mean 'files.*'"),
        ({"include": ["files_reed"]}, "include entry 'files_reed' matches no action; did you mean 'files.read'"),
        ({"exclude": ["browser.clik"]}, "exclude entry 'browser.clik' matches no action; did you mean 'browser.click'"),
        (
            {"include": ["email.send"]},
            "selects only actions that are not offered (email.send: not configured: settings.email.smtp unset)",
        ),
        ({"include": ["files.delete"]}, "files.delete: denied by policy.deny['files.delete']"),
        ({"include": []}, "no action can be offered"),
    ],
)
def test_selection_typos_fail_loudly(tmp_path, selection, message) -> None:
    with _legs(tmp_path, policy={"deny": ["files.delete"]}) as legs:
        with pytest.raises(ConfigError) as lc:
            AgentLegsToolkit(legs=legs, **selection).get_tools()
        with pytest.raises(ConfigError) as li:
            AgentLegsToolSpec(legs=legs, **selection).to_tool_list()
    assert message in str(lc.value) and message in str(li.value)


def test_spec_functions_typo_fails_loudly(tmp_path) -> None:
    with _legs(tmp_path) as legs:
        spec = AgentLegsToolSpec(legs=legs)
        with pytest.raises(
            ConfigError,
            match=r"spec_functions entry 'file_read' matches no action; did you mean "
            r"'files.read'",
        ):
            spec.to_tool_list(spec_functions=["file_read"])
        assert [t.metadata.name for t in spec.to_tool_list(spec_functions=["files_read"])] == ["files_read"]


# -- 15.7 schemas that survive OpenAI strict mode --------------------------------------------------
def _strictify(schema: dict[str, Any]) -> dict[str, Any]:
    """What OpenAI strict mode makes of a schema (as openai's to_strict_json_schema / LangChain do)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                node["additionalProperties"] = False
                node["required"] = list(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.mark.parametrize("name", [s.name for s in LEGS.actions])
def test_every_tool_schema_survives_strict_mode(name: str) -> None:
    tool = AgentLegsTool.from_spec(LEGS, LEGS.get_action(name))
    converted = convert_to_openai_tool(tool, strict=True)
    assert converted["function"]["strict"] is True
    assert strict_problems(converted["function"]["parameters"]) == []
    (li,) = [t for t in AgentLegsToolSpec(legs=LEGS, include=["*"]).to_tool_list() if t.metadata.name == tool.name] or [None]
    if li is not None:  # (email is not offered without settings; its schema is the same core schema)
        assert strict_problems(_strictify(li.metadata.get_parameters_dict())) == []


def test_strict_mode_arguments_reach_the_server_and_python_dicts_still_work() -> None:
    """A strict-mode model must send every field: pairs for headers/params, JSON text, nulls."""
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(AgentLegsToolkit(legs=LEGS, include=["http.request"]).get_tools()))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    args = {
        "method": "POST",
        "url": SERVER.url("/echo"),
        "headers": [{"name": "X-Trace", "value": "t-1"}],
        "params": [{"name": "page", "value": 2}, {"name": "q", "value": "a b"}],
        "json": '{"total": 12.5, "items": [1, 2]}',
        "body": None,
        "timeout_s": None,
    }
    before = len(SERVER.requests)
    out = graph.compile().invoke(
        {
            "messages": [
                AIMessage(content="", tool_calls=[{"name": "http_request", "args": args, "id": "strict-1", "type": "tool_call"}])
            ]
        }
    )
    (msg,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert msg.status == "success", msg.content
    sent = SERVER.requests[before]
    assert {k.lower(): v for k, v in sent.headers.items()}["x-trace"] == "t-1" and sent.path == "/echo"
    assert json.loads(sent.body) == {"total": 12.5, "items": [1, 2]}
    assert sent.query == {"page": ["2"], "q": ["a b"]}
    # Python callers keep the documented plain forms
    r = LEGS.run(
        "http.request",
        {
            "method": "POST",
            "url": SERVER.url("/echo"),
            "headers": {"X-Trace": "t-2"},
            "params": {"page": 3},
            "json": {"total": 1},
        },
    )
    assert r.ok and json.loads(SERVER.requests[-1].body) == {"total": 1}
    assert {k.lower(): v for k, v in SERVER.requests[-1].headers.items()}["x-trace"] == "t-2"
    assert SERVER.requests[-1].query == {"page": ["3"]}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"json": "not json"}, "json: Value error, not valid JSON text"),
        ({"headers": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "the name 'A' is given twice"),
        ({"headers": [{"name": "A"}]}, "exactly the keys 'name' and 'value'"),
    ],
)
def test_bad_strict_mode_arguments_are_invalid_input(args, problem) -> None:
    r = LEGS.run("http.request", {"method": "POST", "url": SERVER.url("/echo"), **args})
    assert not r.ok and r.error is not None and r.error.type == "invalid_input" and problem in r.error.message


def test_no_warning_filter_hides_the_json_field() -> None:
    import inspect

    import agent_legs.actions.http._actions as http
    import agent_legs.actions.http._models as http_models
    import langchain_agent_legs._tool as tool

    assert not any("catch_warnings" in inspect.getsource(m) for m in (tool, http, http_models))
    assert LEGS.get_action("http.request").input_model.model_json_schema()["properties"].keys() >= {"json"}


# -- 15.5 sessions follow the agent run ------------------------------------------------------------
ONE_WRITE_PER_SESSION = {"budgets": [{"actions": "files.write", "limit": 1, "per": "total", "scope": "session"}]}


def test_langchain_runs_without_thread_id_get_their_own_session(tmp_path) -> None:
    from langchain.agents import create_agent

    def run(config: dict[str, Any] | None = None) -> list[ToolMessage]:
        model = ScriptedChatModel(
            steps=[[("files_write", {"path": "a.txt", "content": "x"}), ("files_list", {"path": "."})], "done"]
        )
        state = create_agent(model, AgentLegsToolkit(legs=legs, include=["files.*"]).get_tools()).invoke(
            {"messages": [("user", "go")]}, config=config
        )
        return [m for m in state["messages"] if isinstance(m, ToolMessage)]

    with _legs(tmp_path, policy=ONE_WRITE_PER_SESSION) as legs:
        first, second = run(), run()  # two users, no thread id: each may write once
        same_thread = [run({"configurable": {"thread_id": "t-1"}}), run({"configurable": {"thread_id": "t-1"}})]
        log = _log(legs)
    assert [m.status for m in first + second] == ["success"] * 4
    assert [m.status for m in same_thread[0]] == ["success", "success"]
    assert "budget_exceeded" in next(m.content for m in same_thread[1] if m.status == "error")
    sessions = [e["session"] for e in log]
    assert sessions[0] == sessions[1] != sessions[2] == sessions[3]  # one run, one session (parallel calls too)
    assert all(s.startswith("run-") for s in sessions[:4]) and sessions[4:] == ["t-1"] * 4


async def test_llamaindex_runs_get_their_own_session_and_a_reused_context_shares_it(tmp_path) -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.workflow import Context

    async with _legs(tmp_path, policy=ONE_WRITE_PER_SESSION) as legs:

        def agent() -> FunctionAgent:
            llm = scripted_llamaindex_llm(
                [[("files_write", {"path": "a.txt", "content": "x"}), ("files_list", {"path": "."})], "done"]
            )
            return FunctionAgent(tools=AgentLegsToolSpec(legs=legs, include=["files.*"]).to_tool_list(), llm=llm)

        await agent().run(user_msg="go")
        await agent().run(user_msg="go")
        shared = agent()
        ctx = Context(shared)
        await shared.run(user_msg="go", ctx=ctx)
        shared.llm._scripted_state["turn"] = 0  # the same conversation continues in the same Context
        await shared.run(user_msg="again", ctx=ctx)
        log = _log(legs)
    sessions = [e["session"] for e in log]
    outcomes = [e["outcome"] for e in log]
    assert len(set(sessions[0:2])) == 1 and len(set(sessions[2:4])) == 1 and sessions[0] != sessions[2]
    assert len(set(sessions[4:8])) == 1 and sessions[4] not in sessions[:4]
    assert all(s.startswith("run-") for s in sessions)
    assert outcomes[:6] == ["ok"] * 6 and "budget_exceeded" in outcomes[6:]
