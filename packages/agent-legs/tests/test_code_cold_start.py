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
    assert kernels and all(k.dead and k.channel.sock._closed for k in kernels)  # shut down and closed
    from agent_legs.actions.code import _reaper

    assert _reaper.drain() == []
    assert not set(sandbox_containers()) & {k.container.id for k in kernels}


def _service(legs, wait_s: float = 120.0):
    """The code service once started (polled: a bound on liveness, not a timing)."""
    import time

    from agent_legs.actions.code._service import CodeService

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        svc = legs._runtime._services.get(CodeService)
        if svc is not None:
            return svc
        time.sleep(0.05)
    raise AssertionError("the code service did not start")


def test_prestart_starts_the_sandbox_before_the_first_call(open_legs) -> None:
    from agent_legs.actions.code import _reaper

    before = set(_reaper.owned())
    legs = open_legs(policy={"allow": ["code.*"]}, settings={"code": {"pool_size": 1}})  # prestart "auto"
    svc = _service(legs)  # started with no call made
    import time

    deadline = time.monotonic() + 120
    while not svc.pool and time.monotonic() < deadline:
        time.sleep(0.05)
    (pooled,) = svc.pool
    r = legs.run("code.run", {"code": "print(1+1)"})
    assert r.ok and r.data["stdout"] == "2\n" and r.data["new_kernel"]
    assert svc.kernels["default"] is pooled  # the first call ran on the container started at Legs()
    assert pooled.container.id in set(_reaper.owned()) - before


@pytest.mark.parametrize(
    ("policy", "prestart", "expected"),
    [
        ({"allow": ["code.*"]}, "auto", True),
        ({"allow": ["code.run", "files.*"]}, "auto", True),
        ({}, "auto", False),  # the default policy allows code.* but does not name it: no container at every Legs()
        ({"allow": ["*"]}, "auto", False),
        ({"allow": ["files.*"]}, True, False),  # code.run denied: never
        ({}, True, True),
        ({"allow": ["code.*"]}, False, False),
    ],
)
def test_when_legs_prestarts_the_sandbox(policy, prestart, expected) -> None:
    from agent_legs import Policy
    from agent_legs._legs import prestart_wanted
    from agent_legs._policy import PolicyEngine

    p = Policy.model_validate(policy)
    assert prestart_wanted(p, prestart, PolicyEngine(p)) is expected


def test_close_while_the_sandbox_is_still_prestarting_leaves_nothing(open_legs) -> None:
    legs = open_legs(policy={"allow": ["code.*"]}, settings={"code": {"pool_size": 2}})
    legs.close()  # at once: the service is still starting (or not yet): it is closed once started
    from agent_legs.actions.code import _reaper

    assert _reaper.drain() == []  # and no_leftover_containers: none of this process's is left


def test_a_first_call_takes_the_kernel_the_pool_is_starting(open_legs) -> None:
    """A new service fills its pool; the first call waits for the container the pool is starting
    rather than starting a second one beside it (two containers starting at once on a small machine
    each take longer)."""
    from agent_legs.actions.code import _reaper

    before = set(_reaper.owned())
    legs = open_legs(settings={"code": {"pool_size": 1, "prestart": False}})
    r = legs.run("code.run", {"code": "1"})
    assert r.ok and r.data["new_kernel"]
    svc = _service(legs)
    made = [c for c in _reaper.owned() if c not in before]
    assert svc.kernels["default"].container.id == made[0]  # the pool's first container, not one of its own


def test_waiting_for_removals_leaves_the_kernels_of_an_open_legs_alone(open_legs, tmp_path) -> None:
    """drain() (what a test or the exit waits on) waits for another Legs' background removals; only
    the exit hook's sweep takes the containers of a Legs still open."""
    from agent_legs.actions.code import _reaper

    kept = open_legs(settings={"code": {"pool_size": 0}})
    assert kept.run("code.run", {"code": "x = 41"}).ok
    other = open_legs(workspace=tmp_path / "w2", state_dir=tmp_path / "s2", settings={"code": {"pool_size": 0}})
    assert other.run("code.run", {"code": "1"}).ok
    other.close()
    assert _reaper.drain() == []
    r = kept.run("code.run", {"code": "x + 1"})
    assert r.ok and r.data["value"] == "42" and not r.data["new_kernel"]
