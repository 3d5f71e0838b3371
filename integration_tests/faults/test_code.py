"""Faults of the code sandbox, injected for real: containers killed by PID, a Docker engine that is not
there or never answers.

What must hold under each fault:

- a sandbox container killed mid-call (its PID 1 or its kernel, ``kill -9`` from the host): the call
  fails cleanly (``failed``, not retryable: the code may have run in part, and the message says so),
  the session's next call works on a fresh kernel (``data.new_kernel``), nothing is left behind;
- a sandbox killed between calls: the next call is not failed for it; it runs on a fresh kernel and
  says the old one was lost;
- the engine unreachable (a unix socket nobody listens on, a TCP listener that accepts and never
  answers): ``unavailable`` naming the engine and the reason, within the call's deadline, no traceback.

The shared dockerd is never stopped: the unreachable engines are fakes pointed at by
``settings.code.docker_host``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent_legs import Legs
from agent_legs_testing.docker import sandbox_containers


def _host_pid(container_id: str) -> int:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container_id], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return int(out)


def _kernel_pid(container_id: str) -> int:
    """The kernel: the only child of the container's PID 1 (the driver's supervisor)."""
    pid1 = _host_pid(container_id)
    (child,) = Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()
    return int(child)


def _the_new_sandbox(before: set[str]) -> str:
    """The one container this test's ``Legs`` started (others of this process may linger from earlier tests)."""
    (cid,) = set(sandbox_containers()) - before
    return cid


def _kill(pid: int) -> None:
    subprocess.run(["kill", "-9", str(pid)], check=True, timeout=30)


def _no_traceback(result, caplog) -> None:
    assert "Traceback" not in result.output
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.fixture
def legs(tmp_path):
    with Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        settings={"code": {"pool_size": 0}},
        policy={"code": {"timeout_s": 40}},
    ) as legs:
        yield legs


@pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")
@pytest.mark.parametrize("victim", ["pid1", "kernel"])
def test_a_sandbox_killed_mid_call_fails_cleanly_and_the_next_call_recovers(legs, tmp_path, victim, caplog) -> None:
    caplog.set_level(logging.WARNING)
    before = set(sandbox_containers())
    assert legs.run("code.run", {"code": "state = 1"}).ok
    cid = _the_new_sandbox(before)
    pid = _host_pid(cid) if victim == "pid1" else _kernel_pid(cid)
    results = []
    call = threading.Thread(
        target=lambda: results.append(legs.run("code.run", {"code": "import time\nopen('started', 'w').close()\ntime.sleep(60)"}))
    )
    call.start()
    started = tmp_path / "ws" / "started"
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    _kill(pid)
    call.join(30)
    (r,) = results
    assert not r.ok and r.error.type == "failed" and not r.error.retryable
    assert "died during the call" in r.error.message and "may have run in part" in r.error.message
    _no_traceback(r, caplog)
    assert cid not in sandbox_containers(), "the killed sandbox's container must be removed"
    r = legs.run("code.run", {"code": "'state' in globals()"})
    assert r.ok and r.data["value"] == "False" and r.data["new_kernel"]


@pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")
def test_a_sandbox_killed_between_calls_is_replaced_by_the_next_call(legs) -> None:
    before = set(sandbox_containers())
    assert legs.run("code.run", {"code": "state = 1"}).ok
    cid = _the_new_sandbox(before)
    _kill(_host_pid(cid))
    deadline = time.monotonic() + 20
    while (
        subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter", f"id={cid}"], capture_output=True, text=True
        ).stdout.strip()
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    r = legs.run("code.run", {"code": "'state' in globals()"})
    assert r.ok and r.data["value"] == "False" and r.data["new_kernel"]
    assert "stopped since the last call" in r.data["kernel_replaced"]
    assert cid not in sandbox_containers()


def test_docker_socket_nobody_listens_on_is_unavailable(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "docker.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: connections are refused
    try:
        with Legs(
            workspace=tmp_path / "ws",
            state_dir=tmp_path / "st",
            settings={"code": {"docker_host": f"unix://{path}"}},
            policy={"code": {"timeout_s": 5}},
        ) as legs:
            t0 = time.monotonic()
            r = legs.run("code.run", {"code": "1"})
            elapsed = time.monotonic() - t0
    finally:
        dead.close()
    assert r.error.type == "unavailable" and r.error.retryable
    assert f"cannot reach the Docker engine (unix://{path})" in r.error.message
    assert "refused" in r.error.message.lower()
    assert elapsed < 5, f"{elapsed:.1f} s"
    _no_traceback(r, caplog)


@contextlib.contextmanager
def _silent_listener():
    """A TCP listener on loopback that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], held
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_docker_engine_that_never_answers_is_unavailable_within_the_deadline(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    with _silent_listener() as (port, held):
        with Legs(
            workspace=tmp_path / "ws",
            state_dir=tmp_path / "st",
            settings={"code": {"docker_host": f"tcp://127.0.0.1:{port}"}},
            policy={"code": {"timeout_s": 4}},
        ) as legs:
            t0 = time.monotonic()
            r = legs.run("code.run", {"code": "1"})
            elapsed = time.monotonic() - t0
        assert held, "the fake engine was never contacted"
    assert r.error.type == "unavailable" and r.error.retryable, r.error
    assert f"tcp://127.0.0.1:{port}" in r.error.message and "did not answer within this call's 4 s" in r.error.message
    assert elapsed < 4 + 1.5, f"{elapsed:.1f} s: the deadline is the whole call"
    _no_traceback(r, caplog)


def test_a_silent_engine_fails_the_start_without_holding_a_long_deadline(tmp_path, caplog) -> None:
    # with the default 60 s deadline, the engine's handshake has its own bound (10 s)
    caplog.set_level(logging.WARNING)
    with (
        _silent_listener() as (port, _),
        Legs(
            workspace=tmp_path / "ws", state_dir=tmp_path / "st", settings={"code": {"docker_host": f"tcp://127.0.0.1:{port}"}}
        ) as legs,
    ):
        t0 = time.monotonic()
        r = legs.run("code.run", {"code": "1"})
        elapsed = time.monotonic() - t0
    assert r.error.type == "unavailable" and f"cannot reach the Docker engine (tcp://127.0.0.1:{port})" in r.error.message
    assert "timed out" in r.error.message.lower()
    assert elapsed < 20, f"{elapsed:.1f} s"
    _no_traceback(r, caplog)


def test_a_silent_local_engine_with_the_sandbox_prestarted_is_unavailable_and_leaves_nothing(caplog) -> None:
    """The first container is asked of a local engine at Legs() (``_early``): an engine socket that
    accepts and never answers fails that start within its handshake bound and the first call says
    ``unavailable`` naming the engine, as without the early start; close() and the exit wait for nothing."""
    from agent_legs.actions.code import _reaper

    caplog.set_level(logging.WARNING)
    where = tempfile.mkdtemp(prefix="al-")  # a unix socket's path is short
    path = os.path.join(where, "d.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)  # never accepted: the engine is silent
    try:
        with Legs(
            workspace=os.path.join(where, "ws"),
            state_dir=os.path.join(where, "st"),
            policy={"allow": ["code.*"]},
            settings={"code": {"docker_host": f"unix://{path}"}},
        ) as legs:
            r = legs.run("code.run", {"code": "1"})
    finally:
        server.close()
    assert r.error.type == "unavailable" and r.error.retryable, r.error
    assert f"cannot reach the Docker engine (unix://{path})" in r.error.message
    _no_traceback(r, caplog)
    assert _reaper.drain() == []
    shutil.rmtree(where, ignore_errors=True)
