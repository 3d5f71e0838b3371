"""``policy.files``: what the files actions may do (a section of ``Policy``)."""

from __future__ import annotations

from pydantic import Field

from ..._sections import PolicySection

__all__ = ["FilesPolicy"]


class FilesPolicy(PolicySection):
    read_only: bool = False
    deny: list[str] = Field(
        default_factory=lambda: [".env", "**/.env", "**/*.pem", "**/id_*", "**/*.key"],
        description="Workspace-relative globs that can never be read or written.",
    )
    max_read_bytes: int = Field(1_000_000, gt=0)
    max_write_bytes: int = Field(10_000_000, gt=0)
    timeout_s: float = Field(30, gt=0)
