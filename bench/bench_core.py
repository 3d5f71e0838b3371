"""The runtime's own cost: policy decision, validation, telemetry, the hop to the runtime thread."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from opentelemetry import context
from pydantic import BaseModel

from agent_legs import ActionOutput, ActionRegistry, Legs, Policy, action
from agent_legs._policy import PolicyEngine

from ._stats import alternate, summarize, time_async, time_sync

registry = ActionRegistry()


class NoteIn(BaseModel):
    text: str


@action("bench.hop", description="No-op that runs in the runtime loop.", registry=registry)
async def hop(ctx: Any, args: NoteIn) -> ActionOutput:
    return ActionOutput(output=args.text)


@action("bench.inline", description="No-op that runs on the caller's thread.", inline=True, registry=registry)
async def inline(ctx: Any, args: NoteIn) -> ActionOutput:
    return ActionOutput(output=args.text)


def run(iterations: int) -> dict[str, Any]:
    engine = PolicyEngine(Policy(allow=["files.*", "http.request"], deny=["files.delete"],
                                 require_approval=["email.send"]))
    engine.decide("files.read")
    uncached_engine = PolicyEngine(Policy(allow=[f"family{i}.*" for i in range(20)] + ["files.*"]))
    results: dict[str, Any] = {
        "policy_decision_cached": summarize(time_sync(lambda: engine.decide("files.read"), iterations * 10)),
        "policy_decision_uncached_21_rules": summarize(
            time_sync(lambda: uncached_engine._decide("files.read"), iterations * 10)
        ),
        "validation": summarize(time_sync(lambda: NoteIn.model_validate({"text": "x"}), iterations * 10)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        legs = Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st", policy={"allow": ["bench.*"]},
                    registry=registry)
        spec = legs.get_action("bench.hop")

        async def in_loop(n: int) -> list[float]:
            return await time_async(
                lambda: legs._execute(spec, {"text": "x"}, "s", None, context.get_current()), n
            )

        pipeline = legs._runtime.submit(in_loop(iterations)).result()

        async def noop() -> None:
            return None

        results["pipeline_in_loop_with_span_and_log"] = summarize(pipeline)
        results["runtime_hop_only"] = summarize(time_sync(lambda: legs._runtime.submit(noop()).result(), iterations))
        results |= alternate(
            {
                "run_hop": lambda: legs.run("bench.hop", {"text": "x"}),
                "run_inline": lambda: legs.run("bench.inline", {"text": "x"}),
            },
            iterations,
        )

        async def arun_inline() -> list[float]:
            return await time_async(lambda: legs.arun("bench.inline", {"text": "x"}), iterations)

        results["arun_inline"] = summarize(asyncio.run(arun_inline()))
        legs.close()
    results["targets"] = {"policy_decision_p50_us<=20": results["policy_decision_cached"]["p50_us"] <= 20}
    return results
