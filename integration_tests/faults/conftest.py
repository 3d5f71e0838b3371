"""Fault injection: real faults against a real ``Legs`` (issue 22, "Nothing lost under faults").

Run by ``nox -s faults`` (not by ``nox -s tests``). Every fault here is a real one: a process killed
with SIGKILL, a tmpfs that fills up (mounted in a private mount namespace, so nothing outside the
test sees it), a TCP listener that accepts and never answers, Chromium or a container killed by PID.
Each test states the guarantee it checks; docs/reliability.md lists them.

Fixtures for every family's ``test_<family>.py`` (fixtures, since test modules cannot import a conftest):

* ``dirs``: a workspace and a state dir side by side.
* ``python_child``: ``python_child(code, env=None, prefix=())`` starts a child Python process running
  ``code`` (dedented) with this checkout's packages, stdout/stderr piped, ``prefix`` before the
  interpreter (e.g. ``NO_DAC_OVERRIDE``: root without the right to ignore file permissions); any still
  running at teardown is killed.
* ``kill_child``: ``kill_child(proc)`` sends SIGKILL (no cleanup of any kind runs) and reaps.
* ``in_tmpfs``: ``in_tmpfs(code, mount, size)`` runs ``code`` in a child Python inside a private mount
  namespace where ``mount`` is a fresh tmpfs of ``size`` bytes (the full-disk cases); the child sees
  the rest of the file system as usual, so it copies out what the test must check. Returns the
  ``CompletedProcess``.
* ``hung_listener``: ``(host, port)`` of a TCP listener that accepts connections and never answers.
* ``procs``: ``procs.descendants(pid)`` / ``procs.chromium_pids()``, processes started by this test
  process (never another run's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SRC = [
    ROOT / "packages/agent-legs/src",
    ROOT / "packages/langchain-agent-legs/src",
    ROOT / "packages/llama-index-tools-agent-legs/src",
    ROOT / "shared/testing/src",
]
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([*map(str, _SRC), *filter(None, [os.environ.get("PYTHONPATH")])]),
    "PYTHONUNBUFFERED": "1",
}


# Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: file permissions apply to it (EACCES cases as root).
NO_DAC_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", "--")


@pytest.fixture
def no_dac_override() -> tuple[str, ...]:
    """``prefix`` for ``python_child`` that makes file permissions apply (also to root)."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed for the permission faults: apt-get install util-linux")
    return NO_DAC_OVERRIDE


def _python_child(
    code: str, *, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (), **popen: object
) -> subprocess.Popen[str]:
    """Start ``python -c code`` (dedented) with this checkout's packages importable; stdout/stderr are pipes.

    ``prefix`` goes before the interpreter (e.g. ``setpriv ...`` to run it without some capability)."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        env={**CHILD_ENV, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def _kill_child(proc: subprocess.Popen[str]) -> None:
    """SIGKILL (no cleanup of any kind runs) and reap."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def _unshare() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for the full-disk faults: apt-get install util-linux")
    # root: a private mount namespace; otherwise a user namespace that maps us to root inside it
    return ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]


def _in_tmpfs(code: str, mount: Path, size: int, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python whose ``mount`` is a fresh tmpfs of ``size`` bytes (private mount namespace).

    The tmpfs disappears with the child: copy out (in ``code``) whatever the test must look at.
    """
    mount.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o size={size},mode=0700 agent-legs-faults "$1" || exit 97\nshift\nexec "$@"'
    argv = [*_unshare(), "sh", "-c", script, "sh", str(mount), sys.executable, "-c", textwrap.dedent(code)]
    proc = subprocess.run(argv, env=CHILD_ENV, text=True, capture_output=True, timeout=timeout)
    if proc.returncode == 97:
        pytest.fail(f"cannot mount a tmpfs in a private mount namespace: {proc.stderr.strip()}")
    return proc


@pytest.fixture
def hung_listener() -> Iterator[tuple[str, int]]:
    """A TCP listener that accepts every connection, reads nothing and never answers (a hung collector/server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read, never answered

    t = threading.Thread(target=accept, daemon=True, name="hung-listener")
    t.start()
    try:
        yield srv.getsockname()
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        srv.close()


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def chromium_pids(root: int | None = None) -> set[int]:
    """Chromium processes started by this test process (or by ``root``): never another run's browsers."""
    out = set()
    for pid in descendants(root or os.getpid()):
        with contextlib.suppress(OSError):
            if "chrom" in Path(f"/proc/{pid}/comm").read_text():
                out.add(pid)
    return out


@pytest.fixture
def python_child() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(code: str, *, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        proc = _python_child(code, env=env, prefix=prefix)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            _kill_child(proc)


@pytest.fixture
def kill_child() -> Callable[[subprocess.Popen[str]], None]:
    return _kill_child


@pytest.fixture
def in_tmpfs() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _in_tmpfs


@pytest.fixture
def procs() -> SimpleNamespace:
    return SimpleNamespace(descendants=descendants, chromium_pids=chromium_pids)
