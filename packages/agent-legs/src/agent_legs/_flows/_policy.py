"""``policy.flows``: the exfiltration guard's section of ``Policy``.

* ``mode``: what happens to a sink call whose arguments carry private data to a destination that is
  not trusted: ``"require_approval"`` (the default: a person decides), ``"deny"`` (refused) or
  ``"off"`` (let through, nothing indexed).
* ``trusted_destinations``: where private data may go without asking. Entries with ``@`` are
  recipient globs (``"*@example.com"``), entries ``mcp:<server glob>`` name MCP servers, every other
  entry is a host rule (``host[:port]``, ``*.glob``, CIDR; the one parser of ``_matching``). Unset, it
  is the exact (non-wildcard) entries of ``policy.network.allow_hosts`` and
  ``policy.email.allow_recipients``: a host you named is trusted, a wildcard makes hosts reachable but
  not trusted. A list (even empty) replaces that default.
* ``private_sources``: action globs whose results are private in addition to the built-in sources.
* ``max_index_chars``: how many 12-character windows of private text one session's index holds;
  past it the session is *saturated* and every sink to an untrusted destination is sent to the
  mode's outcome (fail closed), naming this key.

A malformed section is a ``ConfigError`` naming the key (``policy.flows.<key>``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .._matching import parse_host_rule
from .._sections import PolicySection

__all__ = ["FlowsPolicy"]


class FlowsPolicy(PolicySection):
    mode: Literal["require_approval", "deny", "off"] = Field(
        "require_approval",
        description="Private data to an untrusted destination: ask a person, refuse the call, or let it through.",
    )
    trusted_destinations: list[str] | None = Field(
        None,
        description="Host rules, recipient globs (with @) and mcp:<server> entries private data may reach; "
        "unset: the exact entries of network.allow_hosts and email.allow_recipients.",
    )
    private_sources: list[str] = Field(
        default_factory=list, description="Action globs whose results are private, besides the built-in sources."
    )
    max_index_chars: int = Field(
        1_000_000, gt=0, description="Private text one session's index covers; past it the session fails closed."
    )

    @field_validator("trusted_destinations")
    @classmethod
    def _check_destinations(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for entry in value:
            text = entry.strip()
            if not text:
                raise ValueError("an entry is empty")
            if "@" in text:
                continue
            if text.lower().startswith("mcp:"):
                if not text[4:].strip():
                    raise ValueError(f"{entry!r} names no MCP server")
                continue
            try:
                parse_host_rule(text)
            except Exception as exc:  # ValueError, ActionError: the entry names no host
                raise ValueError(f"{entry!r} is not a host rule, recipient glob or mcp:<server>: {exc}") from None
        return value
