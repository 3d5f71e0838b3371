"""Third-party MCP servers behind Agent Legs: their tools as governed ``mcp.<server>.<tool>`` actions.

``_client`` runs one server (start, restart, close); ``_actions`` turns its tools into per-``Legs``
actions. Importing this package imports nothing (``settings.mcp`` is read from ``_settings``), and neither
module imports the ``mcp`` SDK (the ``[mcp]`` extra) at import time: without it, the configured
servers' actions are ``unavailable`` with the install hint.
"""
