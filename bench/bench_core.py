"""The runtime's own cost per action, part by part, for a no-op action.

Each step of the call pipeline (``agent_legs._pipeline``) is timed on its own with the same objects the pipeline uses
(``overhead_budget``): argument validation, the policy decision, the budget check, the span (start +
attributes + end) and the action-log line, calling the handler under its deadline, building and
redacting the result, and the hop between the caller's thread or loop and the runtime thread. Next
to them, the end-to-end ``run``/``arun`` of the same no-op, once through the runtime thread
(``bench.hop``) and once inline (``bench.inline``, how ``files.*`` and ``http.request`` run), so the
parts can be checked against the whole. Telemetry is timed with the provider a user gets by default
(no OTLP endpoint set) and with a recording provider and a batch processor, as when exporting to Jaeger.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from opentelemetry import context, trace
from pydantic import BaseModel

from agent_legs import ActionOutput, ActionRegistry, Legs, Policy, action
from agent_legs._arguments import validate as _validate
from agent_legs._policy import PolicyEngine
from agent_legs._telemetry import CallRecord, Telemetry

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


def _p50(summary: dict[str, float]) -> float:
    return summary["p50_us"]


def _telemetry_parts(tmp: Path, legs: Legs, n: int) -> dict[str, Any]:
    """Span alone, log line alone, and both as ``finish`` does them (with redaction of the record)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    out: dict[str, Any] = {}
    tel = legs._telemetry
    parent = context.get_current()
    record = CallRecord(
        "bench.hop", "bench_hop", "s", None, "allow", "ok", 0.01, {"text": "x"}, "x", None, "policy.allow['bench.*']"
    )

    def span_only() -> None:
        span = tel.start("bench_hop", "bench.hop", "s", None, parent)
        span.set_attributes({"agent_legs.decision": "allow", "agent_legs.outcome": "ok"})
        span.end()

    entry = {
        "time": "2026-01-01T00:00:00.000+00:00",
        "trace_id": "0" * 32,
        "span_id": "0" * 16,
        "action": "bench.hop",
        "session": "s",
        "call_id": None,
        "decision": "allow",
        "outcome": "ok",
        "duration_ms": 0.01,
        "error": None,
        "rule": "policy.allow['bench.*']",
        "target": None,
        "arguments": {"text": "x"},
    }

    def full(t: Telemetry) -> None:
        t.finish(t.start("bench_hop", "bench.hop", "s", None, parent), record)

    out["span_start_end"] = summarize(time_sync(span_only, n))
    out["action_log_line"] = summarize(time_sync(lambda: tel.action_log.write(entry), n))
    out["span_and_log_line"] = summarize(time_sync(lambda: full(tel), n))
    provider = TracerProvider()
    processor = BatchSpanProcessor(InMemorySpanExporter(), max_queue_size=n * 4 + 1000)
    provider.add_span_processor(processor)
    (tmp / "st-batch").mkdir(exist_ok=True)
    batch = Telemetry(legs.settings.telemetry, tmp / "st-batch", legs._runtime.redactor, provider)
    out["span_and_log_line_batch_processor"] = summarize(time_sync(lambda: full(batch), n))
    batch.action_log.close()
    provider.shutdown()
    return out


def _overhead_budget(tmp: Path, legs: Legs, iterations: int) -> dict[str, Any]:
    n = iterations * 4
    spec = legs.get_action("bench.hop")
    runtime = legs._runtime
    engine = runtime.engine
    parts: dict[str, Any] = {
        "validation": summarize(time_sync(lambda: _validate(spec, {"text": "x"}), n)),
        "policy_decision": summarize(time_sync(lambda: engine.decide("bench.hop"), n)),
        # without budgets the pipeline looks up the action's budgets and skips the state store
        "budget_check_no_budgets": summarize(time_sync(lambda: engine.budgets_for("bench.hop"), n)),
        "caller_context": summarize(time_sync(legs._telemetry.caller_context, n)),
    }
    parts |= _telemetry_parts(tmp, legs, n)
    args = NoteIn(text="x")
    parts["arguments_dump"] = summarize(time_sync(lambda: args.model_dump(mode="json"), n))
    parts["touch_session"] = summarize(time_sync(lambda: runtime.touch_session("s"), n))
    idle_span = trace.INVALID_SPAN

    def use_span() -> None:
        with trace.use_span(idle_span, end_on_exit=False):
            pass

    parts["use_span"] = summarize(time_sync(use_span, n))
    span = legs._telemetry.start("bench_hop", "bench.hop", "s", None, None)
    out = ActionOutput(output="x")
    parts["result_and_redaction"] = summarize(
        time_sync(lambda: legs._pipeline.success(spec, out, time.perf_counter()), n)
    )  # _success scrubs, then bounds

    async def noop() -> None:
        return None

    async def in_loop() -> dict[str, Any]:
        handler = await time_async(lambda: legs._pipeline.call_handler(spec, args, "s", None, span), n)
        execute = legs._pipeline.execute
        pipeline = await time_async(lambda: execute(spec, {"text": "x"}, "s", None, context.get_current()), iterations)
        return {"handler_under_deadline": summarize(handler), "execute_in_runtime_loop": summarize(pipeline)}

    inside = runtime.submit(in_loop()).result()
    span.end()
    parts["handler_under_deadline"] = inside["handler_under_deadline"]
    parts["runtime_hop_sync"] = summarize(time_sync(lambda: runtime.submit(noop()).result(), iterations))

    async def hop_async() -> list[float]:
        return await time_async(lambda: asyncio.wrap_future(runtime.submit(noop())), iterations)

    parts["runtime_hop_async"] = summarize(asyncio.run(hop_async()))

    # the whole, measured end to end
    whole = alternate(
        {
            "run_hop": lambda: legs.run("bench.hop", {"text": "x"}),
            "run_inline": lambda: legs.run("bench.inline", {"text": "x"}),
        },
        iterations,
    )

    async def arun(name: str) -> list[float]:
        return await time_async(lambda: legs.arun(name, {"text": "x"}), iterations)

    whole["arun_hop"] = summarize(asyncio.run(arun("bench.hop")))
    whole["arun_inline"] = summarize(asyncio.run(arun("bench.inline")))
    whole["execute_in_runtime_loop"] = inside["execute_in_runtime_loop"]

    # one line per part of a synchronous run() of a no-op through the runtime thread
    budget = {
        "validation": _p50(parts["validation"]),
        "policy decision": _p50(parts["policy_decision"]),
        "budget check (no budgets)": _p50(parts["budget_check_no_budgets"]),
        "telemetry: span + action-log line (default provider)": _p50(parts["span_and_log_line"]),
        "arguments to JSON (for span and log)": _p50(parts["arguments_dump"]),
        "session bookkeeping": _p50(parts["touch_session"]),
        "span made current (use_span)": _p50(parts["use_span"]),
        "handler call under its deadline": _p50(parts["handler_under_deadline"]),
        "result + redaction": _p50(parts["result_and_redaction"]),
        "caller context": _p50(parts["caller_context"]),
        "runtime hop (sync caller)": _p50(parts["runtime_hop_sync"]),
    }
    in_loop_parts = round(sum(v for k, v in budget.items() if k not in ("caller context", "runtime hop (sync caller)")), 2)
    execute = _p50(whole["execute_in_runtime_loop"])
    return {
        "parts": parts,
        "end_to_end": whole,
        "budget_us": budget,
        "sum_of_parts_us": round(sum(budget.values()), 2),
        "in_loop_sum_of_parts_us": in_loop_parts,
        "execute_in_runtime_loop_p50_us": execute,
        "unaccounted_in_loop_us": round(execute - in_loop_parts, 2),
        "run_hop_p50_us": _p50(whole["run_hop"]),
        "notes": "p50 in microseconds, each part timed alone on the same objects the pipeline uses; "
        "'unaccounted' is the in-loop pipeline (CallPipeline.execute) end to end minus the sum of its parts "
        "(coroutine and exception plumbing, use_span, timer calls); run() adds the caller context and "
        "the hop to the runtime thread",
    }


def run(iterations: int) -> dict[str, Any]:
    engine = PolicyEngine(Policy(allow=["files.*", "http.request"], deny=["files.delete"], require_approval=["email.send"]))
    engine.decide("files.read")
    uncached_engine = PolicyEngine(Policy(allow=[f"family{i}.*" for i in range(20)] + ["files.*"]))
    results: dict[str, Any] = {
        "policy_decision_cached": summarize(time_sync(lambda: engine.decide("files.read"), iterations * 10)),
        "policy_decision_uncached_21_rules": summarize(time_sync(lambda: uncached_engine._decide("files.read"), iterations * 10)),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st", policy={"allow": ["bench.*"]}, registry=registry) as legs,
    ):
        results["overhead_budget"] = _overhead_budget(Path(tmp), legs, iterations)
    results["targets"] = {"policy_decision_p50_us<=20": results["policy_decision_cached"]["p50_us"] <= 20}
    return results
