"""``settings.mcp``: the third-party MCP servers put behind Agent Legs (a section of ``Settings``)."""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..._sections import SettingsSection

__all__ = ["MCP_SERVER_NAME", "McpServerSettings", "McpSettings"]

MCP_SERVER_NAME = re.compile(r"^[a-z0-9_-]{1,32}\Z")  # \Z: $ would match before a trailing newline


class McpServerSettings(SettingsSection):
    """One third-party MCP server put behind Agent Legs (``[settings.mcp.servers.<name>]``).

    Exactly one of ``command`` (a stdio server started as a child process) and ``url`` (a streamable
    HTTP server, reached through the egress guard: ``policy.network``). ``env`` and ``headers`` values
    may hold ``{secret:NAME}`` references, resolved only when the server is started.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] | None = Field(
        None,
        min_length=1,
        description='The server\'s command line (stdio), e.g. ["npx", "-y", "@modelcontextprotocol/server-everything"].',
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of a stdio server, over a minimal "
        "inherited one (HOME, PATH, ...: never Agent Legs' own environment).",
    )
    cwd: str | None = Field(None, description="Working directory of a stdio server.")
    url: str | None = Field(None, description="A streamable HTTP server's endpoint, e.g. http://127.0.0.1:8000/mcp.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="HTTP headers sent to a url server; use {secret:NAME} for credentials."
    )
    timeout_s: float = Field(60, gt=0, description="Deadline of one tool call.")
    startup_timeout_s: float = Field(30, gt=0, description="Deadline to start, initialize and list the tools.")

    @field_validator("command")
    @classmethod
    def _non_empty_command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v[0].strip():
            raise ValueError("the command's first element (the program) is empty")
        return v

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a stdio server) and url (a streamable HTTP server)")
        if self.url is not None and (self.env or self.cwd is not None):
            raise ValueError("env and cwd apply to a command (stdio) server, not to a url one")
        if self.command is not None and self.headers:
            raise ValueError("headers apply to a url server, not to a command (stdio) one")
        return self


class McpSettings(SettingsSection):
    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: dict[str, McpServerSettings] = Field(
        default_factory=dict,
        description="Third-party MCP servers by name ([a-z0-9_-], at most 32 characters); "
        "their tools become the actions mcp.<name>.<tool>.",
    )

    @field_validator("servers")
    @classmethod
    def _names(cls, v: dict[str, McpServerSettings]) -> dict[str, McpServerSettings]:
        for name in v:
            if not MCP_SERVER_NAME.match(name):
                raise ValueError(f"server name {name!r} must be 1-32 characters of a-z, 0-9, '_' and '-'")
        return v
