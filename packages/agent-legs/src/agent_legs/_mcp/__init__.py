"""Third-party MCP servers behind Agent Legs: their tools as governed ``mcp.<server>.<tool>`` actions.

``_client`` runs one server (start, restart, close); ``_actions`` turns its tools into per-``Legs``
actions. Importing this package does not import the ``mcp`` SDK (the ``[mcp]`` extra): without it,
the configured servers' actions are ``unavailable`` with the install hint.
"""

from ._actions import McpActionSpec, McpService
from ._client import INSTALL_HINT

__all__ = ["INSTALL_HINT", "McpActionSpec", "McpService"]
