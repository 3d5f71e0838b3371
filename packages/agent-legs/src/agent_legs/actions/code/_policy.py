"""``policy.code``: what the code actions may do (a section of ``Policy``)."""

from __future__ import annotations

from pydantic import Field

from ..._sections import PolicySection

__all__ = ["CodePolicy"]


class CodePolicy(PolicySection):
    network: bool = False
    timeout_s: float = Field(60, gt=0)
    memory_mb: int = Field(512, ge=32)
    cpus: float = Field(1.0, gt=0)
    max_output_bytes: int = Field(100_000, gt=0)
    pids_limit: int = Field(256, ge=16)
    tmp_mb: int = Field(256, ge=1)
