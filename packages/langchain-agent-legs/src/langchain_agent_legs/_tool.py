"""One generic ``BaseTool`` class for every Agent Legs action; no per-action code.

* the tool's name, description and ``args_schema`` come from the core's ``ActionSpec``; what the
  model is shown (``tool_call_schema``) is the core's model-facing schema: strict-able (OpenAI strict
  mode keeps every field usable) and narrowed to the policy (``agent_legs.tool_schema``);
* the tool call id becomes the action's ``call_id`` (``gen_ai.tool.call.id`` on the span, and the
  idempotency key of side effects such as sending an email);
* the session is ``session=`` if given, else the run's ``configurable.thread_id``, else one session
  per graph run (LangGraph's ``Runtime.execution_info.run_id`` when the caller set ``run_id``, else
  the run's own ``RunControl``), else "default" (a direct call outside any graph). Two users' runs
  without a thread id never share kernels, tabs or session budgets;
* image artifacts (screenshots, figures) reach the model as standard ``image`` content blocks
  (base64, bounded by the core), after the text; ``images=False`` keeps the text only;
* ``ok=False`` is raised as ``ToolException`` with ``handle_tool_error=True``: the model gets an
  error ``ToolMessage`` with the message and hint, and the agent keeps running.

* approval: ``approvals=`` (see ``_approval``).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools.base import ArgsSchema
from pydantic import ConfigDict, PrivateAttr

from agent_legs import ActionResult, ActionSpec, ApprovalDecision, Legs, result_content, tool_schema

from ._approval import Approvals, graph_decision

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
    images: bool = True
    approvals: Approvals = "approver"
    response_format: str = "content_and_artifact"  # type: ignore[assignment]
    handle_tool_error: bool = True  # type: ignore[assignment]
    handle_validation_error: bool = True  # type: ignore[assignment]
    _schema: dict[str, Any] | None = PrivateAttr(None)

    @classmethod
    def from_spec(
        cls, legs: Legs, spec: ActionSpec, session: str | None = None, images: bool = True, approvals: Approvals = "approver"
    ) -> AgentLegsTool:
        return cls(
            name=spec.tool_name,
            description=spec.description,
            args_schema=spec.input_model,
            legs=legs,
            action=spec.name,
            session=session,
            images=images,
            approvals=approvals,
        )

    @property
    def tool_call_schema(self) -> ArgsSchema:
        # What bind_tools() shows the model: the core's model-facing schema (computed once: the policy is immutable).
        if self._schema is None:
            self._schema = {**tool_schema(self.legs, self.legs.get_action(self.action)), "description": self.description}
        return copy.deepcopy(self._schema)

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

    def _to_args_and_kwargs(self, tool_input: Any, tool_call_id: str | None) -> tuple[tuple[str, ...], dict[str, Any]]:
        # LangChain drops all arguments if args_schema declares no fields (an MCP tool's model checks a JSON schema)
        return (), dict(self._parse_input(tool_input, tool_call_id))  # type: ignore[arg-type]

    # -- execution --------------------------------------------------------------------------------
    def _session(self, config: RunnableConfig | None) -> str:
        if self.session:
            return self.session
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        return str(thread) if thread else _run_session()

    def _run(self, config: RunnableConfig, **kwargs: Any) -> tuple[str | list[Any], dict[str, Any]]:
        # The core parents the span (caller_context, with this package's _parenting hook: under
        # OpenInference's tool span when instrumented).
        session, call_id = self._session(config), _TOOL_CALL_ID.get()
        approval = self._approval(kwargs, session, call_id)
        result = self.legs.run(self.action, kwargs, session=session, call_id=call_id, approval=approval)
        return self._content_and_artifact(result)

    async def _arun(self, config: RunnableConfig, **kwargs: Any) -> tuple[str | list[Any], dict[str, Any]]:
        session, call_id = self._session(config), _TOOL_CALL_ID.get()
        approval = self._approval(kwargs, session, call_id)  # interrupt() works in async nodes too
        result = await self.legs.arun(self.action, kwargs, session=session, call_id=call_id, approval=approval)
        if result.ok and result.artifacts and self.images:  # images are decoded and scaled: not on the caller's loop
            return await asyncio.to_thread(self._content_and_artifact, result)
        return self._content_and_artifact(result)

    def _approval(self, kwargs: dict[str, Any], session: str, call_id: str | None) -> ApprovalDecision | None:
        return graph_decision(self.legs, self.action, self.name, self.approvals, kwargs, session, call_id)

    def _content_and_artifact(self, result: ActionResult) -> tuple[str | list[Any], dict[str, Any]]:
        box = _RESULT_BOX.get()
        if box is not None:
            box["result"] = result
        if not result.ok:
            raise ToolException(result.output)  # "Error (<type>): <message>\nHint: <hint>"
        parts = result_content(self.legs, result, images=self.images)  # standard text and image blocks
        return (parts[0]["text"] if len(parts) == 1 else list(parts)), result.model_dump(mode="json")


def _with_artifact(output: Any, box: dict[str, ActionResult]) -> Any:
    if isinstance(output, ToolMessage) and output.artifact is None and "result" in box:
        output.artifact = box["result"].model_dump(mode="json")  # error messages keep the structured result
    return output


_RUNS: OrderedDict[int, tuple[object, str]] = OrderedDict()  # id(RunControl) -> (it, its session), bounded
_RUNS_LOCK = threading.Lock()


def _run_session() -> str:
    """One session per LangGraph run: ``run-<run_id>`` when the caller gave one, else a fresh id for
    the run's ``RunControl`` (the one object all tasks of one invoke share); "default" outside a graph."""
    try:
        from langgraph.runtime import get_runtime

        runtime = get_runtime()
    except (ImportError, RuntimeError, KeyError):
        return "default"
    if run_id := getattr(getattr(runtime, "execution_info", None), "run_id", None):
        return f"run-{run_id}"
    if (control := getattr(runtime, "control", None)) is None:
        return "default"
    with _RUNS_LOCK:  # the object is kept while remembered, so its id cannot be reused meanwhile
        known = _RUNS.pop(id(control), None)
        if known is None or known[0] is not control:
            known = (control, f"run-{uuid.uuid4().hex}")
        _RUNS[id(control)] = known  # the most recent last; the oldest of 4096 runs is forgotten first
        while len(_RUNS) > 4096:
            _RUNS.popitem(last=False)
        return known[1]
