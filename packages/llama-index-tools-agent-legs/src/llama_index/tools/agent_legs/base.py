"""One ``FunctionTool`` per Agent Legs action offered to the model, generated from the registry.

* Offered: selected (``include``/``exclude``, ``spec_functions``), allowed by the policy and
  configured (``agent_legs.offered_actions``); an entry that matches nothing raises ``ConfigError``.
* The ``fn_schema`` validates like the core's input model and shows the model the core's
  model-facing schema (strict-able, narrowed to the policy); the core validates.
* Session: ``session=`` if given; else one session per workflow ``Context``, kept in the context's
  store (``ctx.store``, the supported state API): one ``agent.run()`` is one session, and a run that
  continues a conversation with the same ``ctx`` continues its session (kernel, tab, budgets);
  "default" for a direct call without a workflow.
* A failed action comes back as a ``ToolOutput`` with ``is_error=True`` and the readable error
  (message and hint), never an exception that would stop the agent. ``raw_output`` is the
  ``ActionResult`` as a dict. Image artifacts (screenshots, figures) follow the text as
  ``ImageBlock``s, bounded by the core; ``images=False`` keeps the text only.
* Approval: ``approvals="events"`` waits for a person in the workflow (see ``_approval``).
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Mapping
from typing import Any, Literal

from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.tool_spec.base import BaseToolSpec
from llama_index.core.workflow import Context
from workflows.events import DictLikeModel

from agent_legs import ActionResult, ActionSpec, ApprovalDecision, ConfigError, Legs, offered_actions, result_content, tool_model
from llama_index.tools.agent_legs._approval import decide_in_workflow

__all__ = ["AgentLegsToolSpec"]

_SESSION_KEY = "agent_legs_session"
_BY_CONTEXT: weakref.WeakKeyDictionary[Context, str] = weakref.WeakKeyDictionary()


class AgentLegsToolSpec(BaseToolSpec):
    """The Agent Legs actions offered to the model, as LlamaIndex tools.

    ``include``/``exclude`` take action or tool names, or globs such as ``"files.*"``. ``session``
    fixes the Agent Legs session (browser context, code kernel, budgets); without it each workflow
    run (``Context``) is its own session. ``images=False`` sends screenshots and figures as text.
    """

    spec_functions: list[Any] = []  # generated in to_tool_list()  # noqa: RUF012

    def __init__(
        self,
        legs: Legs,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        session: str | None = None,
        images: bool = True,
        approvals: Literal["approver", "events"] = "approver",
        approval_timeout_s: float | None = None,
    ) -> None:
        if approvals not in ("approver", "events"):
            raise ConfigError(f"approvals must be 'approver' or 'events', not {approvals!r}")
        self.approvals = approvals
        self.approval_timeout_s = approval_timeout_s
        self.legs = legs
        self.include = include
        self.exclude = exclude
        self.session = session
        self.images = images

    def to_tool_list(  # type: ignore[override]
        self, spec_functions: list[str] | None = None, func_to_metadata_mapping: dict[str, ToolMetadata] | None = None
    ) -> list[FunctionTool]:
        specs = offered_actions(self.legs, self.include, self.exclude, spec_functions or None)
        return [self._tool(spec, (func_to_metadata_mapping or {}).get(spec.tool_name)) for spec in specs]

    async def _session(self, ctx: Context | None) -> str:
        if self.session:
            return self.session
        if ctx is None:
            return "default"
        async with ctx.store.edit_state() as state:  # atomic: parallel tool calls of one run agree
            if not isinstance(state, (Mapping, DictLikeModel)):  # a typed state model: one session per Context
                return _BY_CONTEXT.setdefault(ctx, f"run-{uuid.uuid4().hex}")
            session = state.get(_SESSION_KEY)
            if not session:
                session = f"run-{uuid.uuid4().hex}"
                state[_SESSION_KEY] = session
        return str(session)

    def _tool(self, spec: ActionSpec, metadata: ToolMetadata | None) -> FunctionTool:
        legs, action, tool_name, images = self.legs, spec.name, spec.tool_name, self.images

        def run(ctx: Context, **kwargs: Any) -> ToolOutput:  # sync: no loop to read the Context store on
            session, call_id = self.session or "default", _current_tool_call_id()
            approval = None
            if self.approvals == "events" and legs.approval_request(action, kwargs, session, call_id) is not None:
                approval = ApprovalDecision(
                    type="reject",
                    message="approvals='events' waits in the workflow: call the tool asynchronously (acall), as agents do",
                )
            result = legs.run(action, kwargs, session=session, call_id=call_id, approval=approval)
            return _output(legs, tool_name, kwargs, result, images)

        async def arun(ctx: Context, **kwargs: Any) -> ToolOutput:
            session, call_id = await self._session(ctx), _current_tool_call_id()
            approval = None
            if self.approvals == "events":
                approval = await decide_in_workflow(legs, action, kwargs, session, call_id, ctx, self.approval_timeout_s)
            result = await legs.arun(action, kwargs, session=session, call_id=call_id, approval=approval)
            if result.ok and result.artifacts and images:  # images are decoded and scaled off the loop
                return await asyncio.to_thread(_output, legs, tool_name, kwargs, result, images)
            return _output(legs, tool_name, kwargs, result, images)

        for fn in (run, arun):  # FunctionTool finds the Context parameter by its (evaluated) annotation
            fn.__annotations__["ctx"] = Context
        return FunctionTool.from_defaults(
            fn=run,
            async_fn=arun,
            tool_metadata=metadata
            or ToolMetadata(name=tool_name, description=spec.description, fn_schema=tool_model(legs, spec)),
            # direct calls (no agent) need no Context; an agent passes its own, which wins
            partial_params={"ctx": None},
            # FunctionTool would wrap our ToolOutput in another one (str() of it as the content).
            callback=_passthrough,
            async_callback=_apassthrough,  # else it would hop to a thread pool for nothing
        )


def _output(legs: Legs, tool_name: str, kwargs: dict[str, Any], result: ActionResult, images: bool) -> ToolOutput:
    if not result.ok:
        blocks: list[Any] = [TextBlock(text=result.output or "(no output)")]
    else:
        blocks = [
            TextBlock(text=p["text"])
            if p["type"] == "text"
            else ImageBlock(image=p["base64"].encode(), image_mimetype=p["mime_type"])
            for p in result_content(legs, result, images=images)
        ]
    return ToolOutput(
        blocks=blocks,
        tool_name=tool_name,
        raw_input={"args": (), "kwargs": kwargs},
        raw_output=result.model_dump(mode="json"),
        is_error=not result.ok,
    )


def _passthrough(output: Any) -> Any:
    return output if isinstance(output, ToolOutput) else None


async def _apassthrough(output: Any) -> Any:
    return _passthrough(output)


def _current_tool_call_id() -> str | None:
    """The id of the model's tool call, when a LlamaIndex agent workflow is calling the tool.

    LlamaIndex agents do not hand the id to the tool, but their ``call_tool`` step runs for the
    ``ToolCall`` event that carries it, and the workflow runtime keeps that event in a context
    variable. That variable is internal to llama-index-workflows: if it moves, we lose only the id
    (the span's ``gen_ai.tool.call.id`` and the idempotency key of side effects), never the call.
    """
    try:
        from workflows.runtime.types.results import StepWorkerStateContextVar

        event = StepWorkerStateContextVar.get().event
    except (ImportError, LookupError, AttributeError):
        return None
    tool_id = getattr(event, "tool_id", None)
    return tool_id if isinstance(tool_id, str) and tool_id else None
