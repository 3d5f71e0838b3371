"""agent_legs._loops.PerLoop, directly: one resource per event loop, closed with its loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent_legs import ActionError
from agent_legs._loops import PerLoop


class Res:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed_on: asyncio.AbstractEventLoop | None = None
        self.abandoned = False

    async def aclose(self) -> None:
        self.closed_on = asyncio.get_running_loop()


def holder(home: asyncio.AbstractEventLoop | None = None) -> tuple[PerLoop[Res], list[Res]]:
    made: list[Res] = []

    def create() -> Res:
        made.append(Res())
        return made[-1]

    def abandon(r: Res) -> None:
        r.abandoned = True

    return PerLoop(create, lambda r: r.aclose(), abandon, home=home, what="a test resource"), made


def test_one_per_loop_made_on_first_use_and_closed_on_its_loop_at_shutdown() -> None:
    per, made = holder()

    async def main() -> None:
        first, *rest = await asyncio.gather(*(per.get() for _ in range(10)))
        assert all(r is first for r in rest) and made[-1] is first
        assert per.loops() == {asyncio.get_running_loop(): first}

    asyncio.run(main())
    asyncio.run(main())
    assert len(made) == 2 and all(r.closed_on is r.loop for r in made)  # asyncio.run's shutdown_asyncgens
    assert per.loops() == {}


def test_a_loop_closed_without_shutdown_is_dropped_at_the_next_creation() -> None:
    per, made = holder()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(per.get())
    loop.close()  # no shutdown_asyncgens: the hook never runs
    assert loop in per.loops() and not made[0].abandoned
    asyncio.run(per.get())
    assert loop not in per.loops() and made[0].abandoned and made[0].closed_on is None


def test_aclose_closes_all_without_waiting_on_a_running_loop_and_refuses_after() -> None:
    per, made = holder()
    idle = asyncio.new_event_loop()
    idle.run_until_complete(per.get())  # idle loop: closed from a helper thread
    started, release = threading.Event(), threading.Event()
    busy = asyncio.new_event_loop()

    def run_busy() -> None:
        async def main() -> None:
            await per.get()
            started.set()
            while not release.is_set():  # running, not blocked: the scheduled close runs here
                await asyncio.sleep(0.01)

        busy.run_until_complete(main())

    t = threading.Thread(target=run_busy)
    t.start()
    assert started.wait(10)

    async def close() -> None:
        await per.get()  # the calling loop's own: closed directly
        await per.aclose()
        with pytest.raises(ActionError) as exc:
            await per.get()
        assert exc.value.type == "unavailable"

    asyncio.run(close())
    deadline = time.monotonic() + 10  # the close was scheduled on the busy loop, not waited for
    while made[1].closed_on is None and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    t.join(10)
    busy.close()
    idle.close()
    assert len(made) == 3 and all(r.closed_on is r.loop for r in made), [(r.loop, r.closed_on) for r in made]
    assert per.loops() == {}


def test_the_home_loops_resource_is_closed_only_by_aclose() -> None:
    async def main() -> None:
        per, made = holder(home=asyncio.get_running_loop())
        r = await per.get()
        assert r.closed_on is None
        await per.aclose()
        assert r.closed_on is asyncio.get_running_loop() and made == [r]

    asyncio.run(main())
