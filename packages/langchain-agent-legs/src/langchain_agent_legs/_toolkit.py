"""``AgentLegsToolkit``: one ``AgentLegsTool`` per action offered to the model.

Offered: selected by ``include``/``exclude`` (action or tool names, or globs such as ``"files.*"``),
allowed by the policy (``allow`` or ``require_approval``) and configured (``agent_legs.offered_actions``).
An entry that matches no action, or selects only actions that are not offered, raises ``ConfigError``.
"""

from __future__ import annotations

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import ConfigDict

from agent_legs import Legs, offered_actions

from ._tool import AgentLegsTool

__all__ = ["AgentLegsToolkit"]


class AgentLegsToolkit(BaseToolkit):
    """The Agent Legs actions offered to the model, as LangChain tools.

    ``session`` fixes the Agent Legs session; without it each run's ``configurable.thread_id`` is the
    session, and without a thread id each agent run is its own session. ``images=False`` sends
    screenshots and figures as text (their workspace path) for models without vision.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    legs: Legs
    include: list[str] | None = None
    exclude: list[str] | None = None
    session: str | None = None
    images: bool = True

    def get_tools(self) -> list[BaseTool]:
        return [AgentLegsTool.from_spec(self.legs, spec, self.session, self.images)
                for spec in offered_actions(self.legs, self.include, self.exclude)]
