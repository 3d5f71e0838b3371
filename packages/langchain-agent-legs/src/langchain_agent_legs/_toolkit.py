"""``AgentLegsToolkit``: one ``AgentLegsTool`` per action offered to the model.

Offered: selected by ``include``/``exclude`` (action or tool names, or globs such as ``"files.*"``),
allowed by the policy (``allow`` or ``require_approval``) and configured (``agent_legs.offered_actions``).
An entry that matches no action, or selects only actions that are not offered, raises ``ConfigError``.

``approvals`` says who approves a call the policy sends to approval; ``interrupt_on()`` configures
``HumanInTheLoopMiddleware`` from the policy (both in ``_approval``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import ConfigDict

from agent_legs import Legs, offered_actions

from ._approval import Approvals, interrupt_on
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
    approvals: Approvals = "approver"

    def get_tools(self) -> list[BaseTool]:
        return [
            AgentLegsTool.from_spec(self.legs, spec, self.session, self.images, self.approvals)
            for spec in offered_actions(self.legs, self.include, self.exclude)
        ]

    def interrupt_on(self, allowed_decisions: list[str] | None = None) -> dict[str, Any]:
        """``HumanInTheLoopMiddleware(interrupt_on=...)`` for these tools, from the policy (see ``_approval``)."""
        return interrupt_on(self.legs, offered_actions(self.legs, self.include, self.exclude), self.session, allowed_decisions)
