"""The garbage-collected objects a call makes and holds, counted (issue 20, round 8): not timed.

At 50 calls in flight the collector's young generation fills with what each call allocates and
holds across its handler's wait; what the pipeline adds there is checked here by count:

* the per-call lock sections (session table, intent journal, action log) allocate nothing the
  collector tracks (a ``with`` on a lock allocates its bound ``__exit__``), nor does ``Redactor.text``
  on text without secrets (a comprehension over ``s`` made ``s`` a cell on every call);
* a call of a known action does not go through the coroutine that asks MCP servers for unknown ones;
* a handler that waits is held by one ``Resumed`` that is its own deadline in the loop's watchdog,
  not a ``Resumed`` and a ``Deadline``.

The counts use the collector's own counter (a gen-0 pass per two young objects alive at once:
threshold 1), the best of three rounds with the thread switch interval raised, so another thread's
allocations do not count.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from agent_legs import ActionContext, ActionOutput, ActionRegistry, Legs, _deadlines, action
from agent_legs._errors import UnknownActionError
from agent_legs._secrets import Redactor
from agent_legs._sessions import SessionTable
from agent_legs._telemetry._journal import IntentJournal
from agent_legs._telemetry._log_writer import ActionLog

POLICY = {"allow": ["objects.*"]}
actions = ActionRegistry()
_gate: list[asyncio.Event] = []
_waiting: list[ActionContext] = []


class GateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = "x"


@action("objects.wait", description="Wait for the gate.", read_only=True, registry=actions, inline=True)
async def wait(ctx: ActionContext, args: GateIn) -> ActionOutput:
    _waiting.append(ctx)
    await _gate[0].wait()
    return ActionOutput(output=args.text)


def _young_passes_per_call(fn: Callable[[], Any], n: int = 300) -> float:
    """Gen-0 collections per call of ``fn`` with threshold 1: about one per two tracked objects alive at once."""
    best: int | None = None
    for _ in range(3):
        gc.collect()
        threshold, switch = gc.get_threshold(), sys.getswitchinterval()
        sys.setswitchinterval(30.0)  # no other thread runs unless ``fn`` releases the GIL
        gc.set_threshold(1, 10**9, 10**9)
        try:
            before = gc.get_stats()[0]["collections"]
            for _ in range(n):
                fn()
            passes = gc.get_stats()[0]["collections"] - before
        finally:
            gc.set_threshold(*threshold)
            sys.setswitchinterval(switch)
        best = passes if best is None else min(best, passes)
    assert best is not None
    return best / n


def test_the_per_call_lock_sections_and_redaction_without_secrets_allocate_no_tracked_object(tmp_path: Path) -> None:
    table = SessionTable()

    def sessions() -> None:
        table.touch("s", 1.0)
        table.due_for_registration("s", 2.0, 30.0)
        table.touch_due("s", 3.0, 30.0)  # what a call does (round 9): the two above under one lock

    journal, log = IntentJournal(tmp_path / "pending"), ActionLog(tmp_path / "actions.jsonl")
    made = [0]

    def journal_and_log() -> None:
        made[0] += 1
        record_id = f"{made[0]:016x}"
        journal.append_intent(record_id, b'{"intent":"' + record_id.encode() + b'"}\n')
        log.write_line(b'{"id":"' + record_id.encode() + b'"}\n')
        journal.done(record_id)

    redactor = Redactor({})

    def redaction() -> None:
        young = [redactor]  # one young object alive, as in a call: a second one alive with it is a pass
        redactor.text("nothing secret here")
        del young

    try:
        assert _young_passes_per_call(sessions) < 0.1  # main: 2 (two ``with`` statements)
        assert _young_passes_per_call(journal_and_log) < 0.1  # main: 3
        assert _young_passes_per_call(redaction) < 0.1  # main: 1 (the cell)
    finally:
        journal.close()
        log.close()


async def test_a_known_action_is_found_without_the_coroutine_that_asks_mcp_servers(tmp_path: Path, monkeypatch) -> None:
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=actions) as legs:
        asked: list[str] = []
        original = Legs._aget_action

        async def counted(self: Legs, name: str) -> Any:
            asked.append(name)
            return await original(self, name)

        monkeypatch.setattr(Legs, "_aget_action", counted)
        _gate[:] = [asyncio.Event()]
        _gate[0].set()
        result = await legs.arun("objects.wait", {"text": "known"})
        assert result.ok and result.output == "known"
        assert asked == []  # main: ["objects.wait"]
        with pytest.raises(UnknownActionError):  # an unknown action still raises, after asking
            await legs.arun("objects.nope", {})
        assert asked == ["objects.nope"]


async def test_a_waiting_call_is_held_by_one_resumed_that_is_its_own_deadline(tmp_path: Path) -> None:
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=actions) as legs:
        _gate[:] = [asyncio.Event()]
        _waiting.clear()
        calls = [asyncio.create_task(legs.arun("objects.wait", {"text": str(i)})) for i in range(3)]
        while len(_waiting) < 3:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # each handler's first step ran: the pipeline awaits the rest
        pending = _deadlines._watchdogs[asyncio.get_running_loop()].pending
        assert len(pending) == 3
        assert {type(d) for d in pending} == {_deadlines.Resumed}  # main: three Deadline objects besides them
        gc.collect()  # what earlier tests left in cycles
        assert not any(type(o) is _deadlines.Deadline for o in gc.get_objects())
        _gate[0].set()
        results = await asyncio.gather(*calls)
        assert [r.output for r in results] == ["0", "1", "2"]
        assert not pending  # every deadline left the watchdog with its call
