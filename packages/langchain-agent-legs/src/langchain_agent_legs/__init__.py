"""LangChain tools generated from the Agent Legs action registry."""

from ._toolkit import AgentLegsTool, AgentLegsToolkit

__all__ = ["AgentLegsTool", "AgentLegsToolkit"]
