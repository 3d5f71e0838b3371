"""docs/quickstart-llamaindex.md runs as written; only the hosted LLM is swapped for a scripted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_legs_testing.agents import scripted_llamaindex_llm
from agent_legs_testing.quickstart import exec_block, python_blocks

DOC = Path(__file__).resolve().parents[3] / "docs" / "quickstart-llamaindex.md"
HOSTED = 'OpenAI(model="gpt-4o-mini")'
IMPORT = "from llama_index.llms.openai import OpenAI\n"

# LlamaIndex workflows inspect.getmembers() the (pydantic) agent: deprecation noise that is not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")


def _blocks() -> list[str]:
    return python_blocks(DOC)


def _exec(code: str, **names: object) -> dict[str, object]:
    return exec_block(code, DOC, **names)


def test_every_block_is_covered() -> None:
    assert len(_blocks()) == 3


def test_first_agent(in_tmp, capsys) -> None:
    code = _blocks()[0]
    assert HOSTED in code and IMPORT in code
    llm = scripted_llamaindex_llm(
        [[("files_write", {"path": "zen.txt", "content": "Design for failure."})], "Saved the zen to zen.txt."]
    )
    _exec(code.replace(IMPORT, "").replace(HOSTED, "LLM"), LLM=llm)
    assert (in_tmp / "agent-workspace/zen.txt").read_text() == "Design for failure."
    assert "Saved the zen" in capsys.readouterr().out
    log = [json.loads(line) for line in (in_tmp / "state/agent-legs/actions.jsonl").read_text().splitlines()]
    assert [(e["action"], e["session"], e["call_id"]) for e in log] == [("files.write", "chat-1", "call_0_0")]


def test_calling_a_tool_yourself(in_tmp, capsys) -> None:
    _exec(_blocks()[1])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Wrote notes/a.txt (2 bytes)" and out[1].startswith("True Error (denied):")


def test_approvals_in_the_workflow(in_tmp, capsys, monkeypatch) -> None:
    code = _blocks()[2]
    assert HOSTED in code and IMPORT in code
    llm = scripted_llamaindex_llm(
        [
            [
                ("files_write", {"path": "haiku.txt", "content": "old pond"}),
                ("files_write", {"path": "other.txt", "content": "x"}),
            ],
            "Saved the haiku.",
        ]
    )
    answers = iter(["y", "n"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    _exec(code.replace(IMPORT, "").replace(HOSTED, "LLM"), LLM=llm)
    out = capsys.readouterr().out
    assert out.count("Approve files_write?") == 2 and "Saved the haiku." in out
    written = sorted(p.name for p in (in_tmp / "agent-workspace").iterdir())
    assert len(written) == 1  # one approved, one rejected (whichever was asked first)
    log = [json.loads(line) for line in (in_tmp / "state/agent-legs/actions.jsonl").read_text().splitlines()]
    assert sorted(e["approval"]["decision"] for e in log) == ["approved", "rejected"]
    assert {e["approval"]["by"] for e in log} == {"ana"}
