"""Faults under approvals: the process that runs an approved call dies in the middle of it.

A LangGraph agent (SQLite checkpointer) pauses for approval in one process; a second process resumes
it with an approval, and the action, after its effect, kills that process (``os._exit``: no cleanup,
no checkpoint write for the node). LangGraph then still sees the tool node as pending: a third
process resuming the same pause re-runs the node from the start. The decision ledger in the state
directory refuses the second decision for the same call, so the effect happens exactly once and the
model is told the call was already decided.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import langgraph.checkpoint.sqlite  # noqa: F401  (a test dependency: missing it must fail)

SCRIPT = """
import json, os, sqlite3, sys
from pydantic import BaseModel, ConfigDict
from langchain.agents import create_agent
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from agent_legs import ActionOutput, ActionRegistry, Legs, action
from agent_legs_testing.agents import ScriptedChatModel
from langchain_agent_legs import AgentLegsToolkit

phase, root = sys.argv[1], sys.argv[2]
registry = ActionRegistry()


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


@action("test.effect", description="Append a line, then (in the crash phase) die.", registry=registry)
async def effect(ctx, args: In) -> ActionOutput:
    with open(root + "/effects.txt", "a") as f:
        f.write(args.text + "\\n")
    if phase == "crash":
        os._exit(9)  # after the effect, before LangGraph can record the node's result
    return ActionOutput(output="done")


legs = Legs(workspace=root + "/ws", state_dir=root + "/st", registry=registry,
            policy={"allow": ["test.*"], "require_approval": ["test.effect"]})
steps = [[("test_effect", {"text": "once"})], "finished"] if phase == "start" else ["finished"]
conn = sqlite3.connect(root + "/checkpoints.sqlite", check_same_thread=False)
agent = create_agent(ScriptedChatModel(steps=steps), AgentLegsToolkit(legs=legs, approvals="interrupt").get_tools(),
                     checkpointer=SqliteSaver(conn))
cfg = {"configurable": {"thread_id": "t"}}
if phase == "start":
    out = agent.invoke({"messages": [("user", "go")]}, cfg, version="v2")
    print(json.dumps([i.id for i in out.interrupts]))
else:
    out = agent.invoke(Command(resume={sys.argv[3]: {"type": "approve", "by": phase}}), cfg, version="v2")
    tool = [m for m in out.value["messages"] if m.type == "tool"]
    print(json.dumps({"tool": [str(m.content) for m in tool], "interrupts": len(out.interrupts)}))
legs.close()
"""


def _run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), args[0], str(root), *args[1:]],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_an_approved_call_interrupted_by_a_crash_never_runs_again(tmp_path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(SCRIPT))
    started = _run(script, tmp_path, "start")
    assert started.returncode == 0, started.stderr[-3000:]
    (interrupt_id,) = json.loads(started.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "effects.txt").exists()

    crashed = _run(script, tmp_path, "crash", interrupt_id)
    assert crashed.returncode == 9, crashed.stderr[-3000:]
    assert (tmp_path / "effects.txt").read_text() == "once\n"

    resumed = _run(script, tmp_path, "again", interrupt_id)  # a new process resumes the same pause
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert (tmp_path / "effects.txt").read_text() == "once\n"  # exactly once
    (message,) = result["tool"]
    assert "already decided (approve by crash" in message and result["interrupts"] == 0
    log = [json.loads(line) for line in Path(tmp_path / "st/actions.jsonl").read_text().splitlines()]
    assert [(e["outcome"], e["approval"]["by"]) for e in log if e["action"] == "test.effect"][-1] == ("approval_denied", "again")
