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
from opentelemetry import context as otel_context
from pydantic import BaseModel

from agent_legs import ActionOutput, ActionRegistry, Legs, Policy, action
from agent_legs._arguments import plain
from agent_legs._arguments import validate as _validate
from agent_legs._pipeline import _Call
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


_MISSING = object()


def _p50(summary: dict[str, float]) -> float:
    return summary["p50_us"]


def _telemetry_parts(tmp: Path, legs: Legs, n: int) -> dict[str, Any]:
    """The span and the two log lines, alone and as one call makes them (start, intent, finish)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    out: dict[str, Any] = {}
    tel = legs._telemetry
    parent = context.get_current()

    def record(record_id: str | None = None) -> CallRecord:
        return CallRecord(
            "bench.hop",
            "bench_hop",
            "s",
            None,
            "allow",
            "ok",
            0.01,
            {"text": "x"},
            "x",
            None,
            "policy.allow['bench.*']",
            record_id,
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

    def intent_only(t: Telemetry) -> None:
        span = trace.INVALID_SPAN
        record_id = t.intent(span, record())
        t._intents.pop(record_id, None)
        t.journal.done(record_id)  # its done line waits for the next intent line, as in a call

    def full(t: Telemetry) -> None:
        """What one call does: the span opened, the intent line, then the span ended and the outcome line."""
        span = t.start("bench_hop", "bench.hop", "s", None, parent, "No-op that runs in the runtime loop.")
        rec = record()
        t.finish(span, record(t.intent(span, rec)))

    out["span_start_end"] = summarize(time_sync(span_only, n))
    out["action_log_line"] = summarize(time_sync(lambda: tel.action_log.write(entry), n))
    out["intent_line"] = summarize(time_sync(lambda: intent_only(tel), n))
    out["span_and_log_line"] = summarize(time_sync(lambda: full(tel), n))
    provider = TracerProvider()
    processor = BatchSpanProcessor(InMemorySpanExporter(), max_queue_size=n * 4 + 1000)
    provider.add_span_processor(processor)
    (tmp / "st-batch").mkdir(exist_ok=True)
    batch = Telemetry(legs.settings.telemetry, tmp / "st-batch", legs._runtime.redactor, provider)
    out["span_and_log_line_batch_processor"] = summarize(time_sync(lambda: full(batch), n))
    batch.shutdown()
    provider.shutdown()
    return out


def _in_situ(legs: Legs, iterations: int) -> dict[str, Any]:
    """Each step's cost inside the pipeline: ``CallPipeline.execute`` timed whole, alternating with runs
    where one step is replaced by a stub that returns what the step would (the drop is the step's cost
    there, caches and all), and with every step stubbed (what is left is the pipeline's own code)."""
    from agent_legs import _pipeline as pipeline_module
    from agent_legs._policy import Decision

    pipeline, tel, runtime = legs._pipeline, legs._telemetry, legs._runtime
    spec = legs.get_action("bench.hop")
    span = tel.start("bench_hop", "bench.hop", "s", None, None)
    args, verdict = NoteIn(text="x"), Decision("allow", "policy.allow['bench.*']")
    output = ActionOutput(output="x")
    result = pipeline.success(spec, output, time.perf_counter())

    def validate(call: Any, raw: Any) -> Any:
        call.args, call.arguments = args, {"text": "x"}
        return args

    def decide(call: Any) -> Any:
        call.rule = verdict.rule
        return verdict

    async def handler(*_: Any) -> ActionOutput:
        return output

    stubs: dict[str, list[tuple[Any, str, Any]]] = {
        "span opened": [(tel, "start", lambda *a, **k: span)],
        "intent line + span ended + outcome line": [(tel, "intent", lambda *a: None), (tel, "finish", lambda *a: None)],
        "validation + arguments as JSON": [(pipeline, "_validate", validate)],
        "policy decision": [(pipeline, "_decide", decide)],
        "session bookkeeping": [(runtime, "touch_session", lambda s: None)],
        # execute calls the handler itself (its first step in place): what is stubbed is the handler's
        # context and the handler (a coroutine that returns at once, as the no-op does)
        "handler call (its context, its first step)": [
            (pipeline_module, "ActionContext", lambda *a: None),
            (spec, "handler", handler),
        ],
        "result + redaction": [(pipeline, "success", lambda *a, **k: result)],
    }
    stubs["(every step stubbed: the pipeline's own code)"] = [x for v in stubs.values() for x in v]

    async def measure() -> dict[str, Any]:
        execute, samples = pipeline.execute, {k: [] for k in ("whole", *stubs)}
        for _ in range(5):  # alternating rounds: drift hits every case alike
            for name in samples:
                saved = [(obj, attr, vars(obj).get(attr, _MISSING)) for obj, attr, _ in stubs.get(name, [])]
                for obj, attr, stub in stubs.get(name, []):
                    object.__setattr__(obj, attr, stub)  # also on the frozen spec and on the module
                try:
                    samples[name] += await time_async(lambda: execute(spec, {"text": "x"}, "s", None, None), iterations // 2)
                finally:
                    for obj, attr, before in saved:
                        if before is _MISSING:
                            delattr(obj, attr)  # the instance attribute goes: the method is back
                        else:
                            object.__setattr__(obj, attr, before)
        return {k: summarize(v) for k, v in samples.items()}

    timed = runtime.submit(measure()).result()
    span.end()
    whole = _p50(timed["whole"])
    steps = {k: round(whole - _p50(v), 2) for k, v in timed.items() if k != "whole"}
    skeleton = steps.pop("(every step stubbed: the pipeline's own code)")
    return {
        "timed": timed,
        "whole_p50_us": whole,
        "steps_us": steps,
        "pipeline_own_code_us": round(whole - skeleton, 2),
        "remainder_us": round(whole - sum(steps.values()) - (whole - skeleton), 2),
    }


def _overhead_budget(tmp: Path, legs: Legs, iterations: int) -> dict[str, Any]:
    n = iterations * 4
    spec = legs.get_action("bench.hop")
    runtime = legs._runtime
    engine = runtime.engine
    pipeline = legs._pipeline
    tel = legs._telemetry
    span = tel.start("bench_hop", "bench.hop", "s", None, None)
    call = _Call(spec, "s", None, None, span, {"text": "x"}, 0.0)

    def checks() -> None:  # the steps between validation and the intent line, for an allowed no-op
        pipeline._decide(call)
        pipeline._check_installed(call)
        pipeline.flows.is_sink("bench.hop")
        engine.budgets_for("bench.hop")

    def made_current() -> None:
        otel_context.detach(otel_context.attach(trace.set_span_in_context(span)))

    def bookkeeping() -> None:  # the call's own records: its arguments copied, its state, its log record
        _Call(spec, "s", None, None, span, plain({"text": "x"}), 0.0)
        CallRecord("bench.hop", "bench_hop", "s", None, "allow", "ok", 0.01, {"text": "x"}, "x", None, "r")

    parts: dict[str, Any] = {
        "validation": summarize(time_sync(lambda: _validate(spec, {"text": "x"}), n)),
        "validation_and_arguments_json": summarize(time_sync(lambda: pipeline._validate(call, {"text": "x"}), n)),
        "policy_decision": summarize(time_sync(lambda: engine.decide("bench.hop"), n)),
        # without budgets the pipeline looks up the action's budgets and skips the state store
        "budget_check_no_budgets": summarize(time_sync(lambda: engine.budgets_for("bench.hop"), n)),
        "checks": summarize(time_sync(checks, n)),
        "caller_context": summarize(time_sync(legs._telemetry.caller_context, n)),
        "span_start": summarize(time_sync(lambda: tel.start("bench_hop", "bench.hop", "s", None, None, spec.description), n)),
        "span_made_current": summarize(time_sync(made_current, n)),
        "call_bookkeeping": summarize(time_sync(bookkeeping, n)),
    }
    parts |= _telemetry_parts(tmp, legs, n)
    args = NoteIn(text="x")
    parts["arguments_dump"] = summarize(time_sync(lambda: args.model_dump(mode="json"), n))
    parts["touch_session"] = summarize(time_sync(lambda: runtime.touch_session("s"), n))
    out = ActionOutput(output="x")
    parts["result_and_redaction"] = summarize(time_sync(lambda: pipeline.success(spec, out, time.perf_counter()), n))

    async def noop() -> None:
        return None

    async def in_loop() -> dict[str, Any]:
        handler = await time_async(lambda: pipeline.call_handler(spec, args, "s", None, span), n)
        execute = pipeline.execute
        whole = await time_async(lambda: execute(spec, {"text": "x"}, "s", None, context.get_current()), iterations * 2)
        return {"handler_under_deadline": summarize(handler), "execute_in_runtime_loop": summarize(whole)}

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

    # One line per step of the in-loop pipeline (CallPipeline.execute) of a no-op, in the order it runs them.
    telemetry_both = _p50(parts["span_and_log_line"])
    span_start, intent = _p50(parts["span_start"]), _p50(parts["intent_line"])
    budget = {
        "span opened (ids only when nothing records)": span_start,
        "span made current (context attach + detach)": _p50(parts["span_made_current"]),
        "call bookkeeping (arguments copied, call state, log record)": _p50(parts["call_bookkeeping"]),
        "validation + arguments as JSON": _p50(parts["validation_and_arguments_json"]),
        "policy decision, extra installed, flows sink?, budgets": _p50(parts["checks"]),
        "intent line (journal, one write(2))": intent,
        "session bookkeeping": _p50(parts["touch_session"]),
        "handler call under its deadline": _p50(parts["handler_under_deadline"]),
        "result + redaction": _p50(parts["result_and_redaction"]),
        "span ended + outcome line (one write(2))": round(max(telemetry_both - span_start - intent, 0.0), 2),
    }
    in_loop_parts = round(sum(budget.values()), 2)
    execute = _p50(whole["execute_in_runtime_loop"])
    outside = {
        "caller context": _p50(parts["caller_context"]),
        "runtime hop (sync caller)": _p50(parts["runtime_hop_sync"]),
    }
    in_situ = _in_situ(legs, iterations)
    return {
        "in_situ": in_situ,
        "parts": parts,
        "end_to_end": whole,
        "budget_us": budget,
        "outside_us": outside,
        "sum_of_parts_us": in_loop_parts,
        "in_loop_sum_of_parts_us": in_loop_parts,
        "execute_in_runtime_loop_p50_us": execute,
        "unaccounted_in_loop_us": round(execute - in_loop_parts, 2),
        "run_hop_p50_us": _p50(whole["run_hop"]),
        "targets": {"execute_in_runtime_loop_p50_us<=50": execute <= 50},
        "notes": "p50 in microseconds, each step timed alone on the same objects the pipeline uses; "
        "'unaccounted' is the in-loop pipeline (CallPipeline.execute) end to end minus the sum of its steps "
        "(the coroutine calls and the code between the steps); the outcome line is the span and both log "
        "lines timed together minus the span's start and the intent line; run() adds the caller context "
        "and, for actions on the runtime thread, the hop",
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
