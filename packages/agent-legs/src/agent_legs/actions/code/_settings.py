"""``settings.code``: how the code actions reach their backends (a section of ``Settings``).

One engine (``docker_host``, else ``DOCKER_HOST``, else the local socket) or several
(``docker_hosts``: sessions spread by load, see ``_hosts``); never both. Every problem that can be
seen without I/O is a ``ConfigError`` when the settings load.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..._sections import SettingsSection
from ._hosts import DockerHostSettings

__all__ = ["CodeSettings", "DockerHostSettings"]


class CodeSettings(SettingsSection):
    docker_host: str | None = Field(None, description="Docker daemon URL; default DOCKER_HOST or the local socket.")
    docker_hosts: list[DockerHostSettings] = Field(
        default_factory=list,
        description="Several engines: each session's sandbox goes to the healthy one with the fewest live sessions "
        "(per weight); each has its own warm pool. Instead of docker_host.",
    )
    host_retry_s: float = Field(
        30.0, gt=0, le=3600, description="A Docker host taken out after a failure is tried again after this long."
    )
    image: str = "agent-legs-sandbox:latest"
    pool_size: int = Field(2, ge=0, description="Pre-started containers ready for new sessions (per Docker host).")
    max_sessions: int = Field(
        128,
        ge=0,
        description="Sessions that hold a live sandbox kernel at once (all hosts together; the warm pool comes on "
        "top). A new session beyond it waits its turn within its call's timeout (a retryable timeout naming its "
        "place in the queue if that passes first); a place frees when a session is reset, closed or idle for "
        "session_ttl_s. 0: no bound.",
    )
    session_ttl_s: float = Field(1800, gt=0)
    prestart: bool | Literal["auto"] = Field(
        "auto",
        description="Start the sandbox service and the warm pool's first container in the background as soon as "
        "Legs() is built, so that the first code.run finds a kernel ready (or nearly): true whenever the policy "
        "allows code.run; 'auto' when the policy's allow list names code actions explicitly ('code.*', "
        "'code.run'); false: the first code.run starts them.",
    )
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

    @model_validator(mode="after")
    def _one_form(self) -> CodeSettings:
        if self.docker_host and self.docker_hosts:
            raise ValueError("set docker_host (one engine) or docker_hosts (several), not both")
        labels = [h.label for h in self.docker_hosts]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"docker_hosts: each host needs its own name (or URL); repeated: {', '.join(dupes)}")
        return self
