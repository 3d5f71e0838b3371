"""Run a test module inside a network namespace that has only loopback.

Egress tests (SSRF, sandbox network, browser) must not be able to send a packet beyond
127.0.0.1 even if the guard under test is broken. ``run_pytest_in_netns(path)`` re-runs pytest on
``path`` under ``unshare -n`` with ``lo`` up; the module should use the ``isolated_netns``
fixture, which fails unless it really runs in such a namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._require import component_missing

ENV_FLAG = "AGENT_LEGS_IN_NETNS"


def run_pytest_in_netns(path: Path, *pytest_args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        component_missing("a network namespace", "not running as root", "run the tests as root (CI does)")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            component_missing("a network namespace", f"{tool} is not installed", "apt-get install -y util-linux iproute2")
    script = 'ip link set lo up && exec "$0" -m pytest -p no:cacheprovider -q "$@"'
    env = {**os.environ, ENV_FLAG: "1"}
    root = Path(__file__).resolve()
    while root != root.parent and not (root / "noxfile.py").exists():
        root = root.parent
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script, sys.executable, str(path), *pytest_args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=root if (root / "noxfile.py").exists() else None,
    )


def interfaces() -> list[str]:
    import socket

    return sorted(name for _, name in socket.if_nameindex())  # this process's netns (/sys may show the host's)


@pytest.fixture(scope="session", autouse=False)
def isolated_netns() -> None:
    """Fails unless this process is in a namespace whose only interface is ``lo``."""
    if os.environ.get(ENV_FLAG) != "1" or interfaces() != ["lo"]:
        pytest.fail(f"egress tests must run in a loopback-only network namespace (interfaces: {interfaces()}); "
                    "run them through run_pytest_in_netns()", pytrace=False)
