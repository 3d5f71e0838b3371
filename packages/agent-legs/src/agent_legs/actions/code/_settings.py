"""``settings.code``: how the code actions reach their backends (a section of ``Settings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..._sections import SettingsSection

__all__ = ["CodeSettings"]


class CodeSettings(SettingsSection):
    docker_host: str | None = Field(None, description="Docker daemon URL; default DOCKER_HOST or the local socket.")
    image: str = "agent-legs-sandbox:latest"
    pool_size: int = Field(2, ge=0, description="Pre-started containers ready for new sessions.")
    session_ttl_s: float = Field(1800, gt=0)
    runtime: Literal["runc", "runsc"] = Field(
        "runc",
        description="Container runtime: runc (Docker's default) or runsc (gVisor: a user-space kernel "
        "between the code and the host's, for stronger isolation; slower to start, hidden by the pool). runsc must be "
        "registered with Docker (shared/sandbox/ensure-runsc.sh; `agent-legs doctor` checks it).",
    )
    uid: int = Field(
        1000,
        ge=1,
        lt=2**31,
        description="The user (and group) id the sandbox runs as when the "
        "workspace is owned by root; it gets access through POSIX ACLs, never by chown. Pick an id no "
        "host account uses. (A workspace owned by another user is worked on as that user.)",
    )
