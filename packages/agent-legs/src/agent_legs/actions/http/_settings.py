"""``settings.http``: how the http actions reach their backends (a section of ``Settings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..._errors import ActionError
from ..._matching import parse_host_rule
from ..._sections import SettingsSection
from ..._version import __version__

__all__ = ["HttpAuth", "HttpSettings"]


class HttpAuth(SettingsSection):
    hosts: list[str] = Field(description="Host globs (optional ':port') that receive these headers.")
    headers: dict[str, str] = Field(description="Header values; use {secret:NAME} for credentials.")
    allow_http: bool = Field(
        False,
        description="Also send these headers over plain http:// to non-loopback "
        "hosts (readable by anyone on the path). By default they go only over https or to "
        "127.0.0.1, [::1] and localhost; a plain-http request to a listed host is refused.",
    )

    @field_validator("hosts")
    @classmethod
    def _parsable(cls, hosts: list[str]) -> list[str]:
        """Each rule must parse as the egress guard parses its own (one host parser): a rule that
        cannot is a configuration error now, not a rule that silently never matches."""
        for rule in hosts:
            try:
                parse_host_rule(rule)
            except (ActionError, ValueError) as exc:
                raise ValueError(f"invalid host rule {rule!r}: {getattr(exc, 'message', exc)}") from None
        return hosts


class HttpSettings(SettingsSection):
    auth: list[HttpAuth] = Field(default_factory=list)
    user_agent: str = f"agent-legs/{__version__} (+https://github.com/agent-legs/agent-legs)"
    max_connections: int = 100
    retries: int = Field(2, ge=0, description="Retries of idempotent requests on transient errors.")
    transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="Connection layer: aiohttp, driven directly (measured ~2x the sequential speed and "
        "~9x the concurrent throughput), or httpx's own pool.",
    )
