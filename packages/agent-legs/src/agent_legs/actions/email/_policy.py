"""``policy.email``: what the email actions may do (a section of ``Policy``)."""

from __future__ import annotations

from pydantic import Field

from ..._sections import PolicySection

__all__ = ["EmailPolicy"]


class EmailPolicy(PolicySection):
    allow_recipients: list[str] = Field(default_factory=list, description='Address globs such as "*@example.com"; empty: nobody.')
    max_recipients: int = Field(10, ge=1)
    max_attachment_bytes: int = Field(10_000_000, gt=0)
    timeout_s: float = Field(60, gt=0)
