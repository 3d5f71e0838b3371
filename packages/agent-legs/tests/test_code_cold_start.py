"""Cold start and close of the code sandbox: what ``Legs.close()`` leaves to the background, and that
none of it survives the process (issue 20, item 3). Real Docker, real processes; nothing timed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from agent_legs_testing.docker import sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

CHILD = """
import gc, json, os, sys
from agent_legs import Legs
from agent_legs.actions.code import _reaper
mode = sys.argv[3]
legs = Legs(workspace=sys.argv[1], state_dir=sys.argv[2], settings={"code": {"pool_size": 2}})
for session in ("a", "b"):
    assert legs.run("code.run", {"code": "1"}, session=session).ok
made = _reaper.owned()
if mode == "close":
    legs.close()
elif mode == "drop":  # never closed, and nothing refers to it any more
    del legs
    gc.collect()
# mode "exit": left open for the exit hook
print(json.dumps({"pid": os.getpid(), "made": made, "owned_after_close": _reaper.owned()}), flush=True)
"""


def _containers_of(pid: int) -> list[str]:
    owner = f"agent-legs.sandbox.owner={socket.gethostname()}:{pid}"
    out = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={owner}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.parametrize("mode", ["close", "exit", "drop"])
def test_no_container_of_a_process_survives_its_exit(tmp_path, mode) -> None:
    """close() returns without waiting for the engine's removals; the process's exit waits for them.
    Also when the Legs was left open (the exit hook closes it) or dropped without close (its
    containers are still recorded as the process's and removed at exit)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "w"), str(tmp_path / "s"), mode],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["made"]) >= 2  # two sessions' kernels (and the pool's)
    print(f"{mode}: {len(report['owned_after_close'])} of {len(report['made'])} containers not yet removed after close")
    assert _containers_of(report["pid"]) == [], f"containers of process {report['pid']} survived it"
    assert "could not be removed" not in proc.stderr


def test_close_kills_every_kernel_before_it_returns(open_legs) -> None:
    """What close() still does before it returns: each kernel's connection is hung up, so nothing
    of the code runs on (its container stops whether or not its removal has happened yet)."""
    legs = open_legs(settings={"code": {"pool_size": 1}})
    assert legs.run("code.run", {"code": "1"}, session="a").ok
    from agent_legs.actions.code._service import CodeService

    svc = legs._runtime._services[CodeService]
    kernels = [*svc.kernels.values(), *svc.pool]
    legs.close()
    assert kernels and all(k.dead and k.channel.sock.fileno() == -1 for k in kernels)
    from agent_legs.actions.code import _reaper

    assert _reaper.drain() == []
    assert not set(sandbox_containers()) & {k.container.id for k in kernels}
