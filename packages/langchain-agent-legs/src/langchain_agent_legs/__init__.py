"""LangChain tools generated from the Agent Legs action registry."""

from ._approval import Approvals
from ._tool import AgentLegsTool
from ._toolkit import AgentLegsToolkit

__all__ = ["AgentLegsTool", "AgentLegsToolkit", "Approvals"]
