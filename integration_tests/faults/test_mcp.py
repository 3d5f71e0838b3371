"""Faults under governed third-party MCP servers: the server killed from outside, the host killed.

Real faults only: the server process (written with the MCP SDK, started over stdio) is SIGKILLed by
PID in the middle of a call; a child process holding a ``Legs`` with a started server is SIGKILLed
itself. What the model is told is a typed error naming the server, the next call works on a fresh
process, and no server process is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import mcp  # noqa: F401  (a test dependency: missing it must fail, never skip)
import psutil

from agent_legs import Legs

SERVER = str(Path(__file__).parents[2] / "packages" / "agent-legs" / "tests" / "mcp_servers" / "third_party.py")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _legs(tmp_path: Path) -> Legs:
    return Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        policy={"allow": ["mcp.tp.*"]},
        settings={"mcp": {"servers": {"tp": {"command": [sys.executable, SERVER], "timeout_s": 120}}}},
    )


def _gone(pid: int, within_s: float = 20.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_server_killed_mid_call_is_unavailable_and_the_next_call_gets_a_new_one(tmp_path: Path) -> None:
    with _legs(tmp_path) as legs:
        first = legs.run("mcp.tp.pid", {})
        assert first.ok and first.data is not None
        pid = first.data["structured_content"]["result"]
        results: list[Any] = []
        caller = threading.Thread(target=lambda: results.append(legs.run("mcp.tp.hang", {})))
        caller.start()
        time.sleep(1.0)  # the call is in the server now (it sleeps for an hour)
        os.kill(pid, signal.SIGKILL)
        caller.join(60)
        assert not caller.is_alive()
        again = legs.run("mcp.tp.pid", {})
    killed = results[0]
    assert killed.error is not None and killed.error.type == "unavailable"
    assert "MCP server 'tp'" in killed.error.message and "Traceback" not in killed.output
    assert again.ok and again.data is not None and again.data["structured_content"]["result"] != pid


def test_a_killed_host_leaves_no_server_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from agent_legs import Legs
        legs = Legs(workspace={str(tmp_path / "ws")!r}, state_dir={str(tmp_path / "st")!r},
                    policy={{"allow": ["mcp.tp.*"]}},
                    settings={{"mcp": {{"servers": {{"tp": {{"command": [sys.executable, {SERVER!r}]}}}}}}}})
        print(legs.run("mcp.tp.pid", {{}}).data["structured_content"]["result"], flush=True)
        sys.stdin.read()
    """)
    host = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    assert host.stdout is not None
    server_pid = int(host.stdout.readline())
    assert psutil.pid_exists(server_pid)
    host.send_signal(signal.SIGKILL)
    host.wait(10)
    # Its stdin closed with the host: an MCP stdio server exits on end of input.
    assert _gone(server_pid), "the server outlived its SIGKILLed host"
