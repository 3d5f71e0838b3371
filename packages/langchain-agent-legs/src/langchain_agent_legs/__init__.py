"""LangChain tools generated from the Agent Legs action registry.

Importing the package registers its parenting hook with the core (``_parenting``: our spans under
OpenInference's LangChain tool spans); the installed package also declares it as an entry point.
"""

from . import _parenting
from ._approval import Approvals
from ._tool import AgentLegsTool
from ._toolkit import AgentLegsToolkit

__all__ = ["AgentLegsTool", "AgentLegsToolkit", "Approvals"]

_parenting.register()
