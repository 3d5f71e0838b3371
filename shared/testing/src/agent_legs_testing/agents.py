"""Scripted chat models: real agents issue real tool calls without a hosted LLM.

``ScriptedChatModel`` (LangChain) and ``scripted_llamaindex_llm`` (LlamaIndex) answer each turn
with the next scripted step: a list of tool calls, or a final text. They record every message
they receive, so tests can assert what the model saw (e.g. an error ToolMessage).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

Step = list[tuple[str, dict[str, Any]]] | str  # tool calls (name, args) or a final answer


class ScriptedChatModel(BaseChatModel):
    steps: list[Any] = Field(default_factory=list)
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        step = self.steps[self.turn] if self.turn < len(self.steps) else "done"
        self.turn += 1
        if isinstance(step, str):
            message = AIMessage(content=step)
        else:
            message = AIMessage(content="", tool_calls=[
                {"name": name, "args": args, "id": f"call_{self.turn}_{i}", "type": "tool_call"}
                for i, (name, args) in enumerate(step)
            ])
        return ChatResult(generations=[ChatGeneration(message=message)])


def scripted_llamaindex_llm(steps: list[Step]) -> Any:
    """A LlamaIndex function-calling LLM that plays ``steps`` in order."""
    from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    state = {"turn": 0, "seen": []}

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        state["seen"].append(list(messages))
        turn = state["turn"]
        state["turn"] = turn + 1
        step = steps[turn] if turn < len(steps) else "done"
        if isinstance(step, str):
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[TextBlock(text=step)])
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[
            ToolCallBlock(tool_call_id=f"call_{turn}_{i}", tool_name=name, tool_kwargs=json.dumps(args))
            for i, (name, args) in enumerate(step)
        ])

    llm = MockFunctionCallingLLM(response_generator=respond, is_chat_model=True)
    llm._scripted_state = state  # type: ignore[attr-defined]
    return llm
