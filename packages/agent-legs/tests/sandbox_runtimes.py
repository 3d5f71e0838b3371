"""The container runtimes the containment tests run under: each must be there (a missing one FAILS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

RUNTIMES = ["runc", "runsc"]
SANDBOX_UID = 1000


def require_runtime(name: str) -> None:
    """Fail (never skip) when ``name`` is not registered with the local Docker engine."""
    if name == "runc":
        return
    import docker

    client = docker.from_env()
    try:
        runtimes = client.info().get("Runtimes") or {}
    finally:
        client.close()
    if name not in runtimes:
        pytest.fail(
            f"the container runtime {name!r} is not registered with Docker (has: {sorted(runtimes)}); the "
            "containment tests must run under it: as root, bash shared/sandbox/ensure-runsc.sh",
            pytrace=False,
        )


def workspace_for(runtime: str, ws: Path) -> Path:
    """gVisor ignores ACLs, so a root-owned workspace is refused under runsc: give it to the sandbox's
    account, as the operator is told to."""
    if runtime == "runsc" and os.geteuid() == 0:
        ws.mkdir(parents=True, exist_ok=True)
        os.chown(ws, SANDBOX_UID, SANDBOX_UID)
    return ws
