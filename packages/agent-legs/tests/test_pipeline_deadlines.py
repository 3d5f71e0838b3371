"""The pipeline's deadline of a handler that waits (``_deadlines``: one timer per loop, not one per call).

Checked by what the loop holds and what each call reports, not by a clock: calls in flight on one
loop hold one timer between them; a shorter deadline that arrives after longer ones still stops its
call, and the others run on; a timer set by a call that already ended still leads to the next
deadline; an outer call's deadline that fires while an inner call of the same task waits is the
outer call's timeout and the inner call's cancellation (as with ``asyncio.timeout_at``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agent_legs import ActionContext, ActionOutput, ActionRegistry, Legs, action

POLICY = {"allow": ["test.*"]}
waits = ActionRegistry()
_gates: dict[str, asyncio.Event] = {}
_waiting: list[str] = []  # the gate of each handler that reached its wait
_legs: list[Legs] = []  # the Legs an outer handler calls the inner action on


class WaitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gate: str = "g"  # waits until this gate opens
    limit_s: float = 30.0
    inner: bool = False  # awaits test.wait (gate "never", 30 s) from inside the handler


@action(
    "test.wait",
    description="Wait for a gate.",
    read_only=True,
    registry=waits,
    timeout=lambda policy, a: a.limit_s,
    inline=True,  # on the caller's loop, as http.request: the gates are that loop's
)
async def wait(ctx: ActionContext, args: WaitIn) -> ActionOutput:
    if args.inner:
        inner = await _legs[0].arun("test.wait", {"gate": "never"}, session="inner")
        return ActionOutput(output=f"inner {inner.ok}")
    _waiting.append(args.gate)
    await _gates.setdefault(args.gate, asyncio.Event()).wait()
    return ActionOutput(output=f"opened {args.gate}")


async def test_calls_in_flight_on_one_loop_hold_one_deadline_timer(tmp_path: Path) -> None:
    _gates.clear()
    async with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=waits) as legs:
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        _waiting.clear()
        calls = [asyncio.ensure_future(legs.arun("test.wait", {"gate": "a"})) for _ in range(200)]
        while len(_waiting) < 200:
            await asyncio.sleep(0.001)
        assert not any(c.done() for c in calls)
        # asyncio.timeout_at gave each call its own TimerHandle (200 here); the watchdog keeps one.
        assert len(loop._scheduled) - before <= 1  # type: ignore[attr-defined]
        _gates["a"].set()
        results = await asyncio.gather(*calls)
        assert all(r.ok and r.output == "opened a" for r in results)


async def test_a_shorter_deadline_after_longer_ones_stops_only_its_call(tmp_path: Path) -> None:
    _gates.clear()
    async with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=waits) as legs:
        long = [asyncio.ensure_future(legs.arun("test.wait", {"gate": "b"})) for _ in range(20)]
        await asyncio.sleep(0.01)
        short = await legs.arun("test.wait", {"gate": "never", "limit_s": 0.2})
        assert not short.ok and short.error is not None and short.error.type == "timeout" and short.error.retryable
        assert "did not finish within 0.2 s" in short.error.message
        assert not any(c.done() for c in long)  # the others run on, uncancelled
        _gates["b"].set()
        assert all(r.ok for r in await asyncio.gather(*long))


async def test_a_timer_set_by_a_call_that_ended_leads_to_the_next_deadline(tmp_path: Path) -> None:
    _gates.clear()
    async with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=waits) as legs:
        first = asyncio.ensure_future(legs.arun("test.wait", {"gate": "c", "limit_s": 0.1}))
        await asyncio.sleep(0.01)
        _gates["c"].set()
        assert (await first).ok  # its deadline's timer stays set, for nothing
        later = await legs.arun("test.wait", {"gate": "never", "limit_s": 0.3})  # set after the first's timer
        assert not later.ok and later.error is not None and later.error.type == "timeout"


async def test_an_outer_deadline_while_an_inner_call_waits_is_the_outer_calls_timeout(tmp_path: Path) -> None:
    _gates.clear()
    async with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=waits) as legs:
        _legs[:] = [legs]
        outer = await legs.arun("test.wait", {"inner": True, "limit_s": 0.2})
        assert not outer.ok and outer.error is not None and outer.error.type == "timeout"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the deadline's cancellation was taken back
    lines = [(e["session"], e["outcome"], e.get("error")) for e in _read(tmp_path / "st" / "actions.jsonl")]
    assert ("inner", "failed", "cancelled by the caller") in lines
    assert any(s == "default" and o == "timeout" for s, o, _ in lines)


def _read(path: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
