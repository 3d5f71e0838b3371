"""LangChain tools generated from the Agent Legs action registry."""

from ._tool import AgentLegsTool, Approvals
from ._toolkit import AgentLegsToolkit

__all__ = ["AgentLegsTool", "AgentLegsToolkit", "Approvals"]
