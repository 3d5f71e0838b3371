"""A bounded number of live sandbox sessions (``settings.code.max_sessions``): more sessions than places queue,
first come first served, within their call's ``timeout_s`` plus ``policy.code.queue_timeout_s``, against a real
Docker engine and the sandbox image.

Every call succeeds when the deadline allows (a place frees when a session is closed or reset); a deadline
that passes in the queue is a retryable ``timeout`` naming the position, with nothing run and no container
started; concurrent first calls of one session take one place, not two.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent_legs import Legs
from agent_legs.actions.code._service import CodeService
from agent_legs_testing.docker import sandbox_containers

pytestmark = pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")


def run(legs: Legs, code: str, session: str, **kw: object):
    return legs.run("code.run", {"code": code, **kw}, session=session)


def _service(legs: Legs) -> CodeService:
    return legs._runtime.submit(legs._runtime.service(CodeService)).result(60)


def _wait_for(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_more_sessions_than_places_queue_and_each_runs_when_a_place_frees(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0, "max_sessions": 2}}) as legs:
        assert run(legs, "x = 1", "s1").ok and run(legs, "x = 2", "s2").ok
        svc = _service(legs)
        with ThreadPoolExecutor(2) as pool:
            third = pool.submit(run, legs, "x = 3\nx", "s3")
            fourth_started = threading.Event()

            def fourth():
                _wait_for(lambda: svc.admission.waiting == 1)  # s3 is queued first
                fourth_started.set()
                return run(legs, "x = 4\nx", "s4")

            fourth_call = pool.submit(fourth)
            _wait_for(lambda: svc.admission.waiting == 2)  # s3 then s4 queued: two places, both held
            assert not third.done() and not fourth_call.done()
            assert len(svc.kernels) == 2
            legs.close_session("s1")  # a place frees: the session that waited longest takes it
            r3 = third.result(60)
            assert r3.ok and r3.data["value"] == "3" and r3.data["new_kernel"], r3
            assert not fourth_call.done() and svc.admission.waiting == 1
            assert legs.run("code.reset", {}, session="s2").ok  # a reset frees a place too
            r4 = fourth_call.result(60)
        assert r4.ok and r4.data["value"] == "4", r4
        assert set(svc.kernels) == {"s3", "s4"} and svc.admission.busy == 2 and svc.admission.waiting == 0
        assert run(legs, "x", "s3").data["value"] == "3"  # state kept: queueing never evicts a live session


def test_a_deadline_that_passes_in_the_queue_names_the_position_and_runs_nothing(dirs) -> None:
    ws, st = dirs
    policy = {"code": {"queue_timeout_s": 0}}  # the wait may take timeout_s + queue_timeout_s: here 2 s
    with Legs(workspace=ws, state_dir=st, policy=policy, settings={"code": {"pool_size": 0, "max_sessions": 1}}) as legs:
        assert run(legs, "x = 1", "s1").ok
        svc = _service(legs)
        before = len(sandbox_containers())
        t0 = time.monotonic()
        r = run(legs, "open('ran.txt', 'w').write('yes')", "s2", timeout_s=2)
        took = time.monotonic() - t0
        assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r
        assert "settings.code.max_sessions=1" in r.error.message and "nothing ran" in r.error.message, r.error.message
        assert "still behind 1" in r.error.message and "policy.code.queue_timeout_s" in r.error.message, r.error
        assert r.data is not None and r.data["queued_behind"] == 1 and r.data["queued_s"] >= 1.5, r.data
        assert took < 10, took  # its own 2 s deadline (plus the call's frame), not the engine's
        assert not (ws / "ran.txt").exists()
        assert len(sandbox_containers()) == before  # no container was started for it
        assert svc.admission.waiting == 0 and svc.admission.busy == 1  # it left the queue, took nothing
        legs.close_session("s1")
        assert run(legs, "1 + 1", "s2").data["value"] == "2"  # and runs once there is room


def test_a_queued_call_waits_past_its_own_timeout_s_and_its_code_still_gets_all_of_it(dirs) -> None:
    """Before: the queue's wait counted against ``timeout_s``; a call queued longer than it failed although its
    code needed a fraction of it. Now it may wait ``policy.code.queue_timeout_s`` on top."""
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0, "max_sessions": 1}}) as legs:
        assert run(legs, "x = 1", "s1").ok
        svc = _service(legs)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(run, legs, "import time; time.sleep(0.5); 'ran'", "s2", timeout_s=1)
            _wait_for(lambda: svc.admission.waiting == 1)
            time.sleep(1.5)  # longer than the queued call's own timeout_s
            assert not queued.done()
            legs.close_session("s1")
            r = queued.result(60)
        assert r.ok and r.data["value"] == "'ran'", r


def test_concurrent_first_calls_of_one_session_take_one_place(dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0, "max_sessions": 1}}) as legs:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda i: run(legs, f"v{i} = {i}", "same"), range(3)))
        assert all(r.ok for r in results), results
        svc = _service(legs)
        assert list(svc.kernels) == ["same"] and svc.admission.busy == 1 and svc.admission.waiting == 0


def test_a_busy_thread_pool_does_not_make_the_engine_look_dead(dirs) -> None:
    """Before: health pings ran in the loop's shared thread pool; with every thread busy (a burst of container
    creations at 128 sessions) a ping waited past CONNECT_S and the healthy engine was taken out, losing every
    session's kernel. Pings now have a thread of their own."""
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, settings={"code": {"pool_size": 0}}) as legs:
        svc = _service(legs)
        release = threading.Event()

        async def saturate_and_ping() -> str | None:
            busy = [asyncio.ensure_future(asyncio.to_thread(release.wait, 30)) for _ in range(40)]
            await asyncio.sleep(0.2)  # every thread of the default pool is now blocked
            try:
                return await svc._answers(svc.hosts[0])
            finally:
                release.set()
                await asyncio.gather(*busy)

        assert legs._runtime.submit(saturate_and_ping()).result(60) is None
        assert not svc.hosts[0].down
