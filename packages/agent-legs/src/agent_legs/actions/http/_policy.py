"""``policy.http``: what the http actions may do (a section of ``Policy``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..._sections import PolicySection

__all__ = ["HttpPolicy"]


class HttpPolicy(PolicySection):
    methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    timeout_s: float = Field(30, gt=0)
    max_response_bytes: int = Field(2_000_000, gt=0)
    max_redirects: int = Field(10, ge=0)

    @field_validator("methods")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [m.upper() for m in v]
