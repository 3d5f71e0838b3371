"""One ``FunctionTool`` per Agent Legs action, generated from the registry (no per-action code).

The core's input model is the ``fn_schema``; the core validates. A failed action comes back as
a ``ToolOutput`` with ``is_error=True`` and the readable error (message and hint), never an
exception that would stop the agent. ``raw_output`` is the ``ActionResult`` as a dict.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.tool_spec.base import BaseToolSpec

from agent_legs import ActionResult, ActionSpec, Legs

__all__ = ["AgentLegsToolSpec"]


class AgentLegsToolSpec(BaseToolSpec):
    """All (or some) Agent Legs actions as LlamaIndex tools.

    ``include``/``exclude`` take action or tool names, or globs such as ``"files.*"``. ``session``
    names the Agent Legs session (browser context, code kernel, budgets); default ``"default"``.
    """

    spec_functions: list[Any] = []  # generated in to_tool_list()  # noqa: RUF012

    def __init__(
        self, legs: Legs, include: list[str] | None = None, exclude: list[str] | None = None, session: str | None = None
    ) -> None:
        self.legs = legs
        self.include = include
        self.exclude = exclude
        self.session = session or "default"

    def _specs(self) -> list[ActionSpec]:
        def hit(spec: ActionSpec, patterns: list[str]) -> bool:
            return any(fnmatch.fnmatchcase(spec.name, p) or fnmatch.fnmatchcase(spec.tool_name, p) for p in patterns)

        return [s for s in self.legs.actions
                if (self.include is None or hit(s, self.include)) and not (self.exclude and hit(s, self.exclude))]

    def to_tool_list(  # type: ignore[override]
        self, spec_functions: list[str] | None = None, func_to_metadata_mapping: dict[str, ToolMetadata] | None = None
    ) -> list[FunctionTool]:
        specs = self._specs()
        if spec_functions:
            specs = [s for s in specs if s.tool_name in spec_functions or s.name in spec_functions]
        return [self._tool(spec, (func_to_metadata_mapping or {}).get(spec.tool_name)) for spec in specs]

    def _tool(self, spec: ActionSpec, metadata: ToolMetadata | None) -> FunctionTool:
        legs, action, session, tool_name = self.legs, spec.name, self.session, spec.tool_name

        def run(**kwargs: Any) -> ToolOutput:
            result = legs.run(action, kwargs, session=session, call_id=_current_tool_call_id())
            return _output(tool_name, kwargs, result)

        async def arun(**kwargs: Any) -> ToolOutput:
            result = await legs.arun(action, kwargs, session=session, call_id=_current_tool_call_id())
            return _output(tool_name, kwargs, result)

        return FunctionTool.from_defaults(
            fn=run,
            async_fn=arun,
            tool_metadata=metadata or ToolMetadata(name=tool_name, description=spec.description,
                                                   fn_schema=spec.input_model),
            # FunctionTool would wrap our ToolOutput in another one (str() of it as the content).
            callback=_passthrough,
            async_callback=_apassthrough,  # else it would hop to a thread pool for nothing
        )


def _output(tool_name: str, kwargs: dict[str, Any], result: ActionResult) -> ToolOutput:
    return ToolOutput(content=result.output or "(no output)", tool_name=tool_name,
                      raw_input={"args": (), "kwargs": kwargs}, raw_output=result.model_dump(mode="json"),
                      is_error=not result.ok)


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
