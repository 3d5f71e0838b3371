"""Docker fixtures: a running engine and an up-to-date sandbox image, or a loud failure.

``sandbox_image`` makes sure of both (it starts dockerd with ``shared/sandbox/ensure-docker.sh``
when nothing answers, and builds the image when its recipe changed: a no-op when up to date).
Container checks are scoped to this test process (the ``owner`` label), so a concurrent run on
the same engine cannot make them pass or fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._require import component_missing

IMAGE = "agent-legs-sandbox:latest"
LABEL = "agent-legs.sandbox"
ENSURE_DOCKER = Path(__file__).resolve().parents[3] / "sandbox" / "ensure-docker.sh"


def _engine_answers() -> str | None:
    """None when the engine answers, else why not."""
    try:
        r = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    problem = _engine_answers()
    if problem is not None and ENSURE_DOCKER.exists():
        r = subprocess.run(["bash", str(ENSURE_DOCKER)], capture_output=True, text=True, timeout=180)
        problem = _engine_answers() if r.returncode == 0 else (r.stderr.strip() or r.stdout.strip())
    if problem is not None:
        component_missing(
            "Docker",
            f"the engine does not answer ({problem})",
            "bash shared/sandbox/ensure-docker.sh (as root: installs docker.io and starts dockerd), or set DOCKER_HOST",
        )
    from agent_legs.actions.code._sandbox import build_image

    lines: list[str] = []
    try:
        # returns at once when the image is up to date; offline: no registry probe from a test run
        build_image(IMAGE, progress=lines.append, offline=True)
    except Exception as exc:
        component_missing(
            "the sandbox image",
            f"{IMAGE} could not be built: {exc}\n" + "\n".join(lines[-20:]),
            "bash shared/sandbox/build-offline.sh (or: agent-legs sandbox build)",
        )
    return IMAGE


def owner_label(pid: int | None = None) -> str:
    """The label value the code service puts on the containers of this process (or of process ``pid``)."""
    return f"{LABEL}.owner={socket.gethostname()}:{os.getpid() if pid is None else pid}"


def orphan_container(image: str, dead_pid: int = 999999) -> str:
    """Creates (does not start) a sandbox container labelled as owned by a process of this host that is
    gone: what the code service's orphan sweep must remove. Its id."""
    return subprocess.run(
        ["docker", "create", "--label", f"{LABEL}=1", "--label", owner_label(dead_pid), image],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def sandbox_containers(*, mine: bool = True) -> list[str]:
    """Ids of sandbox containers (by default only this process's), running or not."""
    label = owner_label() if mine else LABEL
    out = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def container_processes(container_id: str) -> list[str]:
    """The whole command lines running in a container (``docker top``); [] when it is gone.

    ``ww``: ``docker top`` runs ``ps`` in dockerd's environment, which cuts each line at its ``COLUMNS``
    (80 when dockerd was started from a terminal) without it."""
    r = subprocess.run(["docker", "top", container_id, "-eo", "pid,args", "ww"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return []
    return [line.split(None, 1)[1] for line in r.stdout.splitlines()[1:] if len(line.split(None, 1)) == 2]


@pytest.fixture
def no_leftover_containers(sandbox_image: str) -> Iterator[None]:
    """Asserts that a test leaves no sandbox container behind once its Legs is closed (and the
    removals ``Legs.close`` left to the background, which the process's exit waits for, are done)."""
    before = set(sandbox_containers())
    yield
    from agent_legs.actions.code import _reaper

    _reaper.drain()
    leftover = set(sandbox_containers()) - before
    assert not leftover, f"sandbox containers left behind: {leftover}"
