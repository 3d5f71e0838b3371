"""One generic ``BaseTool`` class for every Agent Legs action; no per-action code.

* the tool's name, description and ``args_schema`` come from the core's ``ActionSpec``;
* the tool call id becomes the action's ``call_id`` (``gen_ai.tool.call.id`` on the span, and the
  idempotency key of side effects such as sending an email);
* the session is ``session=`` if given, else the run's ``configurable.thread_id``, else "default";
* ``ok=False`` is raised as ``ToolException`` with ``handle_tool_error=True``: the model gets an
  error ``ToolMessage`` with the message and hint, and the agent keeps running.
"""

from __future__ import annotations

import warnings
from contextvars import ContextVar
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools.base import ArgsSchema
from pydantic import ConfigDict

from agent_legs import ActionResult, ActionSpec, Legs

__all__ = ["AgentLegsTool"]

# BaseTool.run()/arun() receive the tool call id (from a ToolCall input) but only hand it to
# _parse_input, and only for an InjectedToolCallId field, which the core's input models do not
# have: carry it to _run/_arun, and carry the ActionResult back so that an error ToolMessage
# still has it as its artifact.
_TOOL_CALL_ID: ContextVar[str | None] = ContextVar("agent_legs_tool_call_id", default=None)
_RESULT_BOX: ContextVar[dict[str, ActionResult] | None] = ContextVar("agent_legs_result_box", default=None)


class AgentLegsTool(BaseTool):
    """A LangChain tool that runs one Agent Legs action."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    legs: Legs
    action: str
    session: str | None = None
    response_format: str = "content_and_artifact"  # type: ignore[assignment]
    handle_tool_error: bool = True  # type: ignore[assignment]
    handle_validation_error: bool = True  # type: ignore[assignment]

    @classmethod
    def from_spec(cls, legs: Legs, spec: ActionSpec, session: str | None = None) -> AgentLegsTool:
        return cls(name=spec.tool_name, description=spec.description, args_schema=spec.input_model, legs=legs,
                   action=spec.name, session=session)

    @property
    def tool_call_schema(self) -> ArgsSchema:
        # LangChain copies args_schema into a new pydantic model, and pydantic warns that the HTTP action's
        # field "json" (the contract's name) shadows the deprecated BaseModel.json: at every bind_tools().
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message='Field name "json"', category=UserWarning)
            return super().tool_call_schema

    # -- carry the tool call id into _run/_arun ---------------------------------------------------
    def run(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        box: dict[str, ActionResult] = {}
        tokens = _TOOL_CALL_ID.set(tool_call_id), _RESULT_BOX.set(box)
        try:
            return _with_artifact(super().run(tool_input, *args, tool_call_id=tool_call_id, **kwargs), box)
        finally:
            _TOOL_CALL_ID.reset(tokens[0])
            _RESULT_BOX.reset(tokens[1])

    async def arun(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        box: dict[str, ActionResult] = {}
        tokens = _TOOL_CALL_ID.set(tool_call_id), _RESULT_BOX.set(box)
        try:
            return _with_artifact(await super().arun(tool_input, *args, tool_call_id=tool_call_id, **kwargs), box)
        finally:
            _TOOL_CALL_ID.reset(tokens[0])
            _RESULT_BOX.reset(tokens[1])

    def _parse_input(self, tool_input: str | dict[str, Any], tool_call_id: str | None) -> str | dict[str, Any]:
        # The core validates (one place, and the model gets its precise message plus a span and a log
        # line even for bad input); LangChain's own pass would hide both.
        if isinstance(tool_input, str):
            fields = list(self.legs.get_action(self.action).input_model.model_fields)
            return {fields[0]: tool_input} if fields else {}
        return dict(tool_input)

    # -- execution --------------------------------------------------------------------------------
    def _session(self, config: RunnableConfig | None) -> str:
        if self.session:
            return self.session
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        return str(thread) if thread else "default"

    def _run(self, config: RunnableConfig, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        # The core parents the span (caller_context: under OpenInference's tool span when instrumented).
        result = self.legs.run(self.action, kwargs, session=self._session(config), call_id=_TOOL_CALL_ID.get())
        return _content_and_artifact(result)

    async def _arun(self, config: RunnableConfig, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        result = await self.legs.arun(self.action, kwargs, session=self._session(config), call_id=_TOOL_CALL_ID.get())
        return _content_and_artifact(result)


def _with_artifact(output: Any, box: dict[str, ActionResult]) -> Any:
    if isinstance(output, ToolMessage) and output.artifact is None and "result" in box:
        output.artifact = box["result"].model_dump(mode="json")  # error messages keep the structured result
    return output


def _content_and_artifact(result: ActionResult) -> tuple[str, dict[str, Any]]:
    box = _RESULT_BOX.get()
    if box is not None:
        box["result"] = result
    if not result.ok:
        raise ToolException(result.output)  # "Error (<type>): <message>\nHint: <hint>"
    return result.output, result.model_dump(mode="json")
