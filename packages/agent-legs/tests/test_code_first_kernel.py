"""The first kernel of a prestarted ``Legs`` (the container ``Legs()`` asked the local engine for):
it serves the first ``code.run`` before the service connects the Docker SDK, and every guarantee
of the connection still holds (a missing image's error, the orphan sweep, nothing left behind, the
memory limit named). Real Docker; nothing timed (polls are bounds on liveness)."""

from __future__ import annotations

import subprocess
import time

import pytest

from agent_legs_testing.docker import orphan_container, sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")

CODE = {"allow": ["code.*"]}  # names code actions: settings.code.prestart "auto" starts the sandbox at Legs()


def _until(predicate, what: str, wait_s: float = 120.0) -> None:
    deadline = time.monotonic() + wait_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen")
        time.sleep(0.05)


def test_the_first_call_is_served_before_the_docker_sdk_connects_and_the_next_container_starts(open_legs, monkeypatch) -> None:
    """The SDK's import, ping, image check and orphan sweep, and the pool's next container, used to
    run on the two cores while the engine started the first container and while the first call ran."""
    from agent_legs.actions.code import _container
    from agent_legs.actions.code._service import CodeService

    events: list[str] = []
    connect, after_call, create = _container.connect, CodeService.after_call, CodeService._create

    def connect_(*args, **kwargs):
        events.append("connect")
        return connect(*args, **kwargs)

    async def after_call_(self):
        events.append("first call's end")
        return await after_call(self)

    def create_(self, *args, **kwargs):
        events.append("next container")
        return create(self, *args, **kwargs)

    monkeypatch.setattr(_container, "connect", connect_)
    monkeypatch.setattr(CodeService, "after_call", after_call_)
    monkeypatch.setattr(CodeService, "_create", create_)
    legs = open_legs(policy=CODE, settings={"code": {"pool_size": 1}})
    r = legs.run("code.run", {"code": "print(1+1)"})
    assert r.ok and r.data["stdout"] == "2\n" and r.data["new_kernel"]
    _until(lambda: "next container" in events, "the pool's refill")
    assert events[:3] == ["first call's end", "connect", "next container"]
    svc = legs._runtime._services[CodeService]
    _until(lambda: len(svc.pool) == 1, "the refilled pool")
    assert legs.run("code.run", {"code": "print(3)"}, session="b").data["stdout"] == "3\n"  # the SDK's kernel


def test_a_second_session_arriving_meanwhile_gets_its_kernel_started_at_once(open_legs) -> None:
    legs = open_legs(policy=CODE, settings={"code": {"pool_size": 1}})
    import threading

    results: dict[str, object] = {}

    def call(session: str, code: str) -> None:
        results[session] = legs.run("code.run", {"code": code, "timeout_s": 60}, session=session)

    slow = threading.Thread(target=call, args=("a", "import time; time.sleep(3); print('a')"))
    slow.start()
    fast = threading.Thread(target=call, args=("b", "print('b')"))
    fast.start()
    fast.join(120)
    slow.join(120)
    assert results["a"].data["stdout"] == "a\n" and results["b"].data["stdout"] == "b\n"


def test_a_missing_image_still_fails_the_first_call_naming_the_build(open_legs) -> None:
    legs = open_legs(policy=CODE, settings={"code": {"image": "agent-legs-sandbox:nope"}})
    for _ in range(2):  # and again: the connection is tried at each call, as a failed start was
        r = legs.run("code.run", {"code": "1"})
        assert r.error.type == "unavailable" and "not built" in r.error.message, r.error
        assert "agent-legs sandbox build" in r.error.hint


def test_an_unreachable_engine_still_fails_the_first_call_with_the_hint(open_legs) -> None:
    legs = open_legs(policy=CODE, settings={"code": {"docker_host": "unix:///nonexistent/docker.sock"}})
    r = legs.run("code.run", {"code": "1"})
    assert r.error.type == "unavailable" and "agent-legs sandbox build" in r.error.hint, r.error


def test_orphans_of_dead_processes_are_still_swept(open_legs, sandbox_image) -> None:
    cid = orphan_container(sandbox_image)
    try:
        legs = open_legs(policy=CODE)
        assert legs.run("code.run", {"code": "1"}).ok
        _until(lambda: cid[:12] not in " ".join(sandbox_containers()), "the orphan sweep")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def test_a_legs_closed_before_the_service_connected_leaves_nothing(open_legs) -> None:
    from agent_legs.actions.code import _reaper
    from agent_legs.actions.code._service import CodeService

    legs = open_legs(policy=CODE, settings={"code": {"pool_size": 1}})
    assert legs.run("code.run", {"code": "1"}).ok
    svc = legs._runtime._services[CodeService]
    kernel = svc.kernels["default"]
    legs.close()  # at once: the SDK's connection is not made yet (or being made)
    assert kernel.dead
    assert _reaper.drain() == []
    assert kernel.container.id not in set(sandbox_containers())
    assert svc.hosts[0].client is None or svc._creations == 0  # a connection made meanwhile was closed


def test_the_memory_limit_is_named_when_the_first_kernel_dies_of_it(open_legs) -> None:
    legs = open_legs(policy={**CODE, "code": {"memory_mb": 128, "timeout_s": 30}})
    r = legs.run("code.run", {"code": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))"})
    assert not r.ok and r.error.type == "failed", r.error
    assert "memory limit of 128 MB" in r.error.message
    assert legs.run("code.run", {"code": "1 + 1"}).data["new_kernel"]


def test_the_workspace_is_made_while_the_engine_starts_the_first_container(open_legs) -> None:
    """The runtime's Workspace (the files layer's import) is made by the service's start, not by the
    first call's scan of the workspace after the kernel greets."""
    from agent_legs.actions.code._service import CodeService

    legs = open_legs(policy=CODE, settings={"code": {"pool_size": 1}})
    _until(lambda: CodeService in legs._runtime._services, "the service's start")
    assert "workspace" in vars(legs._runtime)  # (a cached property: made once)
    assert legs.run("code.run", {"code": "print(1)"}).ok
