"""LlamaIndex tools generated from the Agent Legs action registry (PEP 420 namespace package)."""

from llama_index.tools.agent_legs.base import AgentLegsToolSpec

__all__ = ["AgentLegsToolSpec"]
