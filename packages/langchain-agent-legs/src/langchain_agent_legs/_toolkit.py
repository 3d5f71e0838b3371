"""``AgentLegsToolkit``: one ``AgentLegsTool`` per action offered to the model.

Offered: selected by ``include``/``exclude`` (action or tool names, or globs such as ``"files.*"``),
allowed by the policy (``allow`` or ``require_approval``) and configured (``agent_legs.offered_actions``).
An entry that matches no action, or selects only actions that are not offered, raises ``ConfigError``.

``approvals`` says who approves a call the policy sends to approval (see ``AgentLegsTool``);
``interrupt_on()`` is the ``HumanInTheLoopMiddleware`` configuration generated from the policy: the
tools whose actions can need approval, each asked only when the core's pre-check says this very call
needs it (conditions, standing rules), with the policy's reason as the description.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import ConfigDict

from agent_legs import Legs, offered_actions
from agent_legs._policy import PolicyEngine

from ._tool import AgentLegsTool, Approvals, _run_session

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
        return [AgentLegsTool.from_spec(self.legs, spec, self.session, self.images, self.approvals)
                for spec in offered_actions(self.legs, self.include, self.exclude)]

    def interrupt_on(self, allowed_decisions: list[str] | None = None) -> dict[str, Any]:
        """``HumanInTheLoopMiddleware(interrupt_on=...)`` for these tools, from the policy.

        Use it with ``interrupt_mode="per_call"`` and ``approvals="middleware"``: the middleware asks the
        person, the toolkit takes that decision as the approval (recorded with ``by`` when the decision
        carries one), and nobody is asked twice.
        """
        engine = PolicyEngine(self.legs.policy)
        decisions = list(allowed_decisions or ["approve", "edit", "reject"])
        config: dict[str, Any] = {}
        for spec in offered_actions(self.legs, self.include, self.exclude):
            if engine.decide(spec.name).kind != "approve":
                continue
            config[spec.tool_name] = {"allowed_decisions": decisions, "when": self._when(spec.name),
                                      "description": self._describe(spec.name)}
        return config

    def _session_of(self, config: Any) -> str:
        if self.session:
            return self.session
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        return str(thread) if thread else _run_session()

    def _when(self, action: str) -> Any:
        def when(request: Any) -> bool:
            call = request.tool_call
            runtime = getattr(request, "runtime", None)
            session = self._session_of(getattr(runtime, "config", None))
            return self.legs.approval_request(action, call.get("args"), session=session,
                                              call_id=call.get("id")) is not None
        return when

    def _describe(self, action: str) -> Any:
        def describe(tool_call: Any, state: Any, runtime: Any) -> str:
            request = self.legs.approval_request(action, tool_call.get("args"), session=self._session_of(None),
                                                 call_id=tool_call.get("id"))
            return request.reason if request is not None else f"{action} needs approval"
        return describe
