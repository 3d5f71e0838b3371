"""Docker fixtures: a running engine and an up-to-date sandbox image, or a loud failure."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from ._require import component_missing

IMAGE = "agent-legs-sandbox:latest"


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    from agent_legs._sandbox import driver_hash
    from agent_legs._sandbox.build import current_label

    try:
        subprocess.run(["docker", "version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        component_missing("Docker", f"the engine does not answer ({exc})", "bash shared/sandbox/ensure-docker.sh")
    label = current_label(IMAGE)
    if label != driver_hash():
        component_missing("the sandbox image", f"{IMAGE} has driver {label}, expected {driver_hash()}",
                          "python -m agent_legs._sandbox.build (or: agent-legs sandbox build)")
    return IMAGE


def sandbox_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=agent-legs.sandbox"], capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


@pytest.fixture
def no_leftover_containers(sandbox_image: str) -> Iterator[None]:
    """Asserts that a test leaves no sandbox container behind once its Legs is closed."""
    before = set(sandbox_containers())
    yield
    leftover = set(sandbox_containers()) - before
    assert not leftover, f"sandbox containers left behind: {leftover}"
