"""``policy.code``: what the code actions may do (a section of ``Policy``).

``timeout_s`` bounds the code's own run, from the moment it is sent to the session's kernel;
``queue_timeout_s`` is what a call may wait on top of it for that kernel (a place among
``settings.code.max_sessions``, a container started behind a burst of other sessions' starts, the
session's running call): getting a kernel may take ``timeout_s + queue_timeout_s`` in all.
"""

from __future__ import annotations

from pydantic import Field

from ..._sections import PolicySection

__all__ = ["CodePolicy"]


class CodePolicy(PolicySection):
    network: bool = False
    timeout_s: float = Field(60, gt=0)
    queue_timeout_s: float = Field(60, ge=0)
    memory_mb: int = Field(512, ge=32)
    cpus: float = Field(1.0, gt=0)
    max_output_bytes: int = Field(100_000, gt=0)
    pids_limit: int = Field(256, ge=16)
    tmp_mb: int = Field(256, ge=1)
