"""``AgentLegsToolkit``: one ``AgentLegsTool`` per action the core registers (or a selection)."""

from __future__ import annotations

import fnmatch

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import ConfigDict

from agent_legs import ActionSpec, Legs

from ._tool import AgentLegsTool

__all__ = ["AgentLegsToolkit"]


class AgentLegsToolkit(BaseToolkit):
    """All (or some) Agent Legs actions as LangChain tools.

    ``include``/``exclude`` take action or tool names, or globs such as ``"files.*"``. ``session``
    fixes the Agent Legs session; without it each run's ``configurable.thread_id`` is the session.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    legs: Legs
    include: list[str] | None = None
    exclude: list[str] | None = None
    session: str | None = None

    def get_tools(self) -> list[BaseTool]:
        return [AgentLegsTool.from_spec(self.legs, spec, self.session) for spec in self.legs.actions
                if _selected(spec, self.include, self.exclude)]


def _selected(spec: ActionSpec, include: list[str] | None, exclude: list[str] | None) -> bool:
    def hit(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(spec.name, p) or fnmatch.fnmatchcase(spec.tool_name, p) for p in patterns)

    return (include is None or hit(include)) and not (exclude and hit(exclude))
