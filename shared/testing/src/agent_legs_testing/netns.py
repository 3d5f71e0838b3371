"""Run egress tests inside a network namespace that has only loopback.

Egress tests (SSRF, sandbox network, browser) must not be able to send a packet beyond
127.0.0.1 even if the guard under test is broken. The pattern (used by the SSRF corpus):

1. Put the cases in a module pytest does not collect by itself (name it ``*_corpus.py``, not
   ``test_*.py``) and mark it ``pytestmark = pytest.mark.usefixtures("isolated_netns")``: that
   fixture fails the tests unless the process really is in a namespace whose only interface is
   ``lo``. Start servers on 127.0.0.1 inside it as usual (fixtures run inside the namespace).
2. Add a normal test that re-runs that module under ``unshare -n`` with ``lo`` up::

       from agent_legs_testing.netns import assert_passes_in_netns


       def test_corpus_in_loopback_only_netns() -> None:
           assert_passes_in_netns(Path(__file__).with_name("ssrf_corpus.py"), min_passed=30)

Needs root (CI runs as root), ``unshare`` (util-linux) and ``ip`` (iproute2); without them the
test fails with the reason and the fix, it never skips. Extra pytest arguments pass through
(``-k``, ``-x``, ``-p no:randomly``...). Docker and Chromium are reachable from inside only through
unix sockets / processes started inside, so use this for in-process egress checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._require import component_missing

ENV_FLAG = "AGENT_LEGS_IN_NETNS"


def run_pytest_in_netns(path: Path, *pytest_args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``pytest path`` in a fresh network namespace whose only interface is ``lo`` (up)."""
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
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root if (root / "noxfile.py").exists() else None,
    )


def assert_passes_in_netns(path: Path, *pytest_args: str, min_passed: int = 1, timeout: float = 600) -> int:
    """``run_pytest_in_netns`` and fail (with pytest's own report) unless all passed; returns the count."""
    result = run_pytest_in_netns(path, *pytest_args, timeout=timeout)
    report = result.stdout[-8000:] + result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if re.search(r"\d+ passed", line)]
    assert result.returncode == 0 and summary, report
    assert not re.search(r"\d+ (failed|error)", summary[-1]), report
    passed = int(re.search(r"(\d+) passed", summary[-1]).group(1))  # type: ignore[union-attr]
    assert passed >= min_passed, f"only {passed} passed (expected >= {min_passed})\n{report}"
    return passed


def interfaces() -> list[str]:
    import socket

    return sorted(name for _, name in socket.if_nameindex())  # this process's netns (/sys may show the host's)


@pytest.fixture(scope="session", autouse=False)
def isolated_netns() -> None:
    """Fails unless this process is in a namespace whose only interface is ``lo``."""
    if os.environ.get(ENV_FLAG) != "1" or interfaces() != ["lo"]:
        pytest.fail(
            f"egress tests must run in a loopback-only network namespace (interfaces: {interfaces()}); "
            "run them through run_pytest_in_netns()",
            pytrace=False,
        )
