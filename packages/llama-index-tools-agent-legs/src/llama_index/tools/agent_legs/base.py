"""One ``FunctionTool`` per Agent Legs action, generated from the registry (no per-action code).

The core's input model is the ``fn_schema``; the core validates. A failed action comes back as
a ``ToolOutput`` with ``is_error=True`` and the readable error (message and hint), never an
exception that would stop the agent.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.tool_spec.base import BaseToolSpec

from agent_legs import ActionResult, ActionSpec, Legs

__all__ = ["AgentLegsToolSpec"]


class AgentLegsToolSpec(BaseToolSpec):
    """All (or some) Agent Legs actions as LlamaIndex tools.

    ``include``/``exclude`` take action or tool names, or globs such as ``"files.*"``.
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
        legs, action, session = self.legs, spec.name, self.session

        def run(**kwargs: Any) -> ActionResult:
            return legs.run(action, kwargs, session=session)

        async def arun(**kwargs: Any) -> ActionResult:
            return await legs.arun(action, kwargs, session=session)

        return FunctionTool.from_defaults(
            fn=run,
            async_fn=arun,
            tool_metadata=metadata or ToolMetadata(name=spec.tool_name, description=spec.description,
                                                   fn_schema=spec.input_model),
            callback=_to_output(spec.tool_name),
            async_callback=_ato_output(spec.tool_name),
        )


def _to_output(tool_name: str) -> Callable[[Any], ToolOutput]:
    def convert(result: Any) -> ToolOutput:
        if not isinstance(result, ActionResult):
            return ToolOutput(content=str(result), tool_name=tool_name, raw_input={}, raw_output=result)
        return ToolOutput(content=result.output, tool_name=tool_name, raw_input={},
                          raw_output=result.model_dump(mode="json"), is_error=not result.ok)

    return convert


def _ato_output(tool_name: str) -> Callable[[Any], Any]:
    convert = _to_output(tool_name)

    async def aconvert(result: Any) -> ToolOutput:
        return convert(result)

    return aconvert
