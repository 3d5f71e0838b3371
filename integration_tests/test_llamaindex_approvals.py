"""Approvals where a LlamaIndex agent runs (issue 16): a real ``FunctionAgent`` with a scripted
function-calling LLM; the tool emits ``InputRequiredEvent`` and waits for its own ``HumanResponseEvent``.
Real files in a real workspace; decisions checked on the action log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from workflows.events import HumanResponseEvent, InputRequiredEvent

from agent_legs import Legs
from agent_legs_testing.agents import scripted_llamaindex_llm
from llama_index.tools.agent_legs import AgentLegsToolSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

POLICY = {"allow": ["files.*"], "require_approval": ["files.write"]}


def _writes(tmp_path: Path) -> list[dict]:
    path = tmp_path / "st/actions.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in lines if e["action"] == "files.write"]


async def _run(tmp_path: Path, steps: list, answer, expect: int) -> tuple[list, list[ToolCallResult], object]:
    """Run the agent; when ``expect`` requests are waiting, answer each (``answer(request) -> response``),
    in reverse order, so that matching by id (not by order) is what routes them."""
    legs = Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY)
    try:
        agent = FunctionAgent(
            tools=AgentLegsToolSpec(legs=legs, approvals="events").to_tool_list(), llm=scripted_llamaindex_llm(steps)
        )
        handler = agent.run(user_msg="write the files")
        asked: list[InputRequiredEvent] = []
        results: list[ToolCallResult] = []
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                asked.append(event)
                assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())  # nothing ran yet
                if len(asked) == expect:
                    for request in reversed(asked):
                        handler.ctx.send_event(answer(request))
            elif isinstance(event, ToolCallResult):
                results.append(event)
        final = await handler
    finally:
        legs.close()
    return asked, results, final


async def test_parallel_calls_wait_for_their_own_answers(tmp_path) -> None:
    def answer(request: InputRequiredEvent) -> HumanResponseEvent:
        path = request.approval["arguments"]["path"]
        response = {
            "a.txt": json.dumps({"type": "approve", "by": "ann"}),
            "b.txt": "reject",
            "c.txt": json.dumps({"type": "edit", "args": {"path": "c2.txt", "content": "C2"}}),
        }[path]
        return HumanResponseEvent(response=response, approval_id=request.approval["id"], by="li-reviewer")

    asked, results, final = await _run(
        tmp_path,
        [
            [
                ("files_write", {"path": "a.txt", "content": "A"}),
                ("files_write", {"path": "b.txt", "content": "B"}),
                ("files_write", {"path": "c.txt", "content": "C"}),
            ],
            "All done.",
        ],
        answer,
        expect=3,
    )
    assert "All done." in str(final)
    assert len(asked) == 3 and len({e.approval["id"] for e in asked}) == 3
    approval = asked[0].approval
    assert approval["type"] == "agent_legs.approval" and approval["action"] == "files.write"
    assert approval["rule"] == "policy.require_approval['files.write']"
    assert approval["allowed_decisions"] == ["approve", "reject", "edit"] and approval["id"] == approval["tool_call_id"]
    assert asked[0].prefix.startswith("Approve files_write?")
    ws = tmp_path / "ws"
    assert (ws / "a.txt").read_text() == "A" and not (ws / "b.txt").exists() and (ws / "c2.txt").read_text() == "C2"
    assert {e["arguments"]["path"]: e["approval"] for e in _writes(tmp_path)} == {
        "a.txt": {"decision": "approved", "by": "ann", "rule": None},  # the decision's own "by" wins
        "b.txt": {"decision": "rejected", "by": "li-reviewer", "rule": None},
        "c2.txt": {"decision": "edited", "by": "li-reviewer", "rule": None},
    }
    assert len(_writes(tmp_path)) == 3  # the step replays when an answer arrives: each call still runs once
    errors = [r for r in results if r.tool_output.is_error]
    assert len(errors) == 1 and "approval_denied" in errors[0].tool_output.content


@pytest.mark.parametrize("response", ["yes please", '{"type": "approve", "x": 1}', '{"type": "edit"}'])
async def test_an_answer_of_the_wrong_shape_is_a_refusal(tmp_path, response) -> None:
    _asked, results, _ = await _run(
        tmp_path,
        [[("files_write", {"path": "a.txt", "content": "A"})], "ok"],
        lambda req: HumanResponseEvent(response=response, approval_id=req.approval["id"]),
        expect=1,
    )
    assert not (tmp_path / "ws/a.txt").exists()
    (result,) = results
    assert result.tool_output.is_error and "not understood" in result.tool_output.content


async def test_an_answer_for_another_id_is_not_taken(tmp_path) -> None:
    # A stray answer with an unknown id is ignored; the call waits for (and runs on) its own answer.
    def answer(request: InputRequiredEvent) -> HumanResponseEvent:
        return HumanResponseEvent(response="approve", approval_id=request.approval["id"])

    legs = Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY)
    try:
        agent = FunctionAgent(
            tools=AgentLegsToolSpec(legs=legs, approvals="events").to_tool_list(),
            llm=scripted_llamaindex_llm([[("files_write", {"path": "a.txt", "content": "A"})], "ok"]),
        )
        handler = agent.run(user_msg="write")
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                handler.ctx.send_event(HumanResponseEvent(response="approve", approval_id="somebody-else"))
                handler.ctx.send_event(HumanResponseEvent(response="reject", approval_id=event.approval["id"]))
        await handler
    finally:
        legs.close()
    assert not (tmp_path / "ws/a.txt").exists()
    assert [e["approval"]["decision"] for e in _writes(tmp_path)] == ["rejected"]


async def test_calls_that_need_no_approval_do_not_wait(tmp_path) -> None:
    legs = Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy={"allow": ["files.*"], "require_approval": []})
    try:
        agent = FunctionAgent(
            tools=AgentLegsToolSpec(legs=legs, approvals="events").to_tool_list(),
            llm=scripted_llamaindex_llm([[("files_write", {"path": "a.txt", "content": "A"})], "ok"]),
        )
        handler = agent.run(user_msg="write")
        asked = [e async for e in handler.stream_events() if isinstance(e, InputRequiredEvent)]
        await handler
    finally:
        legs.close()
    assert asked == [] and (tmp_path / "ws/a.txt").exists()


async def test_an_answer_wins_over_a_standing_rule_made_while_it_waited(tmp_path) -> None:
    legs = Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY)
    try:
        spec = AgentLegsToolSpec(legs=legs, approvals="events", session="s")
        agent = FunctionAgent(
            tools=spec.to_tool_list(), llm=scripted_llamaindex_llm([[("files_write", {"path": "a.txt", "content": "A"})], "ok"])
        )
        handler = agent.run(user_msg="write")
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                legs.add_standing_rule("files.write", None, scope="session", session="s")  # meanwhile
                handler.ctx.send_event(HumanResponseEvent(response="reject", approval_id=event.approval["id"]))
        await handler
    finally:
        legs.close()
    assert not (tmp_path / "ws/a.txt").exists()
    assert [e["approval"]["decision"] for e in _writes(tmp_path)] == ["rejected"]
