"""What of a recorded ``http.request``'s span cost is ours: the call against the SDK's own price, in one process.

``python -m bench.ab_spans [ROUNDS] [CALLS]``: the same 1 KB GET (a server in its own process) through
``legs.arun``, alternating in rounds inside one process, at 1 and 50 concurrent calls:

* ``silent``: the default setup (our own provider records nothing: the spans' ids only);
* ``sdk_ref``: the same call plus the SDK's price of the two contracted spans made by hand with the
  recording provider (the call's ``execute_tool`` span with its attributes at start and at end, and
  the ``HTTP GET`` child with its own): what any instrumented peer pays for the same spans;
* ``traced``: the call with that provider passed to ``Legs`` (a ``BatchSpanProcessor``, null exporter).

Reported per case: the median over rounds of CPU per call (every thread of this process) and of p50
wall time, and the median of neighbour differences ``traced - sdk_ref`` (ours, on top of the SDK) and
``sdk_ref - silent`` (the SDK's).

``python -m bench.ab_spans ab REF [ROUNDS] [CALLS]``: the telemetry of commit REF (``_spans``,
``_facade``... loaded beside this tree's as ``bench.ab_core`` does) against this tree's, each opening and
closing an ``http.request`` call's recorded span and writing its two log lines (``Telemetry.start``,
``intent``, ``finish``) with the same recording provider, alternating in rounds: the median of the
neighbour differences of CPU per call (old minus new: positive is a saving).

``python -m bench.ab_spans floor [ROUNDS] [CALLS]``: the two spans of one ``http.request`` call alone
(no request, no log line), through a recording provider (``BatchSpanProcessor``, null exporter):
``ours`` (``Telemetry.start``, the child ``HTTP GET`` span as the handler makes it through our tracer,
``end_span``) against ``sdk`` (the same two spans, names, kinds, parents and attribute values, made by
hand on the provider's tracer), alternating in rounds. Reported: CPU per call (this thread), the median
of the neighbour differences ``ours - sdk``, the processor's export thread's CPU per call (its own
clock), and the collector's passes per 1,000 calls by generation (the spans wait in the processor's
queue, so they outlive gen 0). In so tight a loop the queue (2,048) can fill and the SDK drops spans
("Queue full"): both sides alike.

Not part of ``python -m bench``: it measures a change, not the product.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from agent_legs import Legs

from ._contract_spans import call_attributes, end_attributes, request_attributes
from ._http_layers import _NullExporter

__all__ = ["CASES", "compare", "floor"]

CASES = ("silent", "sdk_ref", "traced")
Call = Callable[[], Awaitable[Any]]


async def _measure(call: Call, total: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per call, p50 wall µs per call)."""
    walls: list[float] = []
    clock = time.perf_counter

    async def one() -> None:
        t = clock()
        await call()
        walls.append(clock() - t)

    sem = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with sem:
            await one()

    cpu0 = time.process_time()
    if concurrency == 1:
        for _ in range(total):
            await one()
    else:
        await asyncio.gather(*(bounded() for _ in range(total)))
    return (time.process_time() - cpu0) / total * 1e6, statistics.median(walls) * 1e6


def compare(port: int, rounds: int = 9, calls: int = 400) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/1kb"
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
    args = {"method": "GET", "url": url}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        legs = stack.enter_context(Legs(workspace=root / "ws", state_dir=root / "st", policy=policy))
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_NullExporter()))
        stack.callback(provider.shutdown)
        traced = stack.enter_context(
            Legs(workspace=root / "ws", state_dir=root / "st-t", policy=policy, tracer_provider=provider)
        )
        sdk = provider.get_tracer("agent_legs")
        description = legs.get_action("http.request").description

        async def silent() -> None:
            r = await legs.arun("http.request", args)
            assert r.ok

        async def sdk_ref() -> None:
            span = sdk.start_span(
                "execute_tool http_request",
                kind=SpanKind.INTERNAL,
                attributes=call_attributes(description),
            )
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                child = sdk.start_span(
                    "HTTP GET",
                    kind=SpanKind.CLIENT,
                    attributes=request_attributes(url, port),
                )
                r = await legs.arun("http.request", args)
                child.set_attribute("http.response.status_code", 200)
                child.end()
            finally:
                otel_context.detach(token)
            span.set_attributes(end_attributes(str(args), r.output))
            span.end()
            assert r.ok

        async def traced_call() -> None:
            r = await traced.arun("http.request", args)
            assert r.ok

        by_case = dict(zip(CASES, (silent, sdk_ref, traced_call), strict=True))

        async def main() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for concurrency in (1, 50):
                for call in by_case.values():
                    await _measure(call, 100, concurrency)
                samples: dict[str, list[tuple[float, float]]] = {k: [] for k in CASES}
                for r in range(rounds):
                    for name in CASES if r % 2 == 0 else tuple(reversed(CASES)):
                        samples[name].append(await _measure(by_case[name], calls, concurrency))

                def diff(a: str, b: str, i: int, samples: dict[str, list[tuple[float, float]]] = samples) -> float:
                    return round(statistics.median(x[i] - y[i] for x, y in zip(samples[a], samples[b], strict=True)), 1)

                out[f"c{concurrency}"] = {
                    **{
                        name: {
                            "cpu_us": round(statistics.median(s[0] for s in samples[name]), 1),
                            "p50_us": round(statistics.median(s[1] for s in samples[name]), 1),
                        }
                        for name in CASES
                    },
                    "sdk_cpu_us": diff("sdk_ref", "silent", 0),
                    "ours_cpu_us": diff("traced", "sdk_ref", 0),
                    "sdk_p50_us": diff("sdk_ref", "silent", 1),
                    "ours_p50_us": diff("traced", "sdk_ref", 1),
                }
            return out

        return asyncio.run(main())


def ab(ref: str, rounds: int = 15, calls: int = 2000) -> dict[str, float]:
    """CPU µs per call of REF's telemetry and this tree's, recording through the same provider."""
    from agent_legs._telemetry import CallRecord

    from .ab_core import load

    old = load(ref, "abold")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_NullExporter()))
    with tempfile.TemporaryDirectory() as tmp, Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st") as legs:
        spec = legs.get_action("http.request")
        settings, redactor = legs.settings.telemetry, legs._runtime.redactor
        for name in ("old", "new"):
            (Path(tmp) / name).mkdir()
        sides = {
            "old": old["_facade"].Telemetry(settings, Path(tmp) / "old", redactor, tracer_provider=provider),
            "new": legs._pipeline.telemetry.__class__(settings, Path(tmp) / "new", redactor, tracer_provider=provider),
        }
        args = {"method": "GET", "url": "http://127.0.0.1:8080/1kb", "headers": {}, "params": {}, "json": None, "body": None}
        output = "HTTP 200 OK  GET http://127.0.0.1:8080/1kb\ncontent-type: text/plain\ncontent-length: 1024\n\n" + "x" * 1024
        parent = otel_context.get_current()

        def one(telemetry: Any, n: int) -> float:
            start, intent, finish = telemetry.start, telemetry.intent, telemetry.finish
            cpu = time.thread_time()
            for _ in range(n):
                span = start("http_request", "http.request", "default", None, parent, spec.description)
                rec = CallRecord("http.request", "http_request", "default", None, "allow", "ok", 0.0, args)
                rec.record_id = intent(span, rec)
                rec.result, rec.duration_ms = output, 1.0
                finish(span, rec)
            return (time.thread_time() - cpu) / n * 1e6

        for side in sides.values():
            one(side, 200)
        samples: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(rounds):
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                samples[name].append(one(sides[name], calls))
        for side in sides.values():
            side.shutdown()
    provider.shutdown()
    return {
        "old_cpu_us": round(statistics.median(samples["old"]), 2),
        "new_cpu_us": round(statistics.median(samples["new"]), 2),
        "saved_cpu_us": round(statistics.median(a - b for a, b in zip(samples["old"], samples["new"], strict=True)), 2),
    }


def floor(rounds: int = 15, calls: int = 3000) -> dict[str, Any]:
    """CPU µs per call of our two spans against the same two made by hand on the SDK (see the docstring)."""
    import gc

    from agent_legs._telemetry import CallRecord
    from agent_legs._telemetry._spans import end_span

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_NullExporter()))
    url = "http://127.0.0.1:8080/1kb"
    args = {"method": "GET", "url": url, "headers": {}, "params": {}, "json": None, "body": None}
    output = "HTTP 200 OK  GET " + url + "\ncontent-type: text/plain\ncontent-length: 1024\n\n" + "x" * 1024
    with tempfile.TemporaryDirectory() as tmp, Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st") as legs:
        description = legs.get_action("http.request").description
        settings, redactor = legs.settings.telemetry, legs._runtime.redactor
        (Path(tmp) / "t").mkdir()
        telemetry = legs._pipeline.telemetry.__class__(settings, Path(tmp) / "t", redactor, tracer_provider=provider)
        ours_tracer, sdk = telemetry.tracer, provider.get_tracer("agent_legs")
        parent = otel_context.get_current()

        def ours(n: int) -> float:
            cpu = time.thread_time()
            for _ in range(n):
                span = telemetry.start("http_request", "http.request", "default", None, parent, description)
                token = otel_context.attach(trace.set_span_in_context(span))
                child = ours_tracer.start_span(
                    "HTTP GET",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "http.request.method": "GET",
                        "url.full": redactor.text(url.split("?", 1)[0]),
                        "server.address": "127.0.0.1",
                        "server.port": 8080,
                    },
                )
                child.set_attribute("http.response.status_code", 200)
                child.end()
                otel_context.detach(token)
                rec = CallRecord("http.request", "http_request", "default", None, "allow", "ok", 1.0, args)
                rec.result = output
                end_span(span, rec, redactor, settings)
            return (time.thread_time() - cpu) / n * 1e6

        def by_hand(n: int) -> float:
            cpu = time.thread_time()
            for _ in range(n):
                span = sdk.start_span(
                    "execute_tool http_request",
                    parent,
                    kind=SpanKind.INTERNAL,
                    attributes=call_attributes(description),
                )
                token = otel_context.attach(trace.set_span_in_context(span))
                child = sdk.start_span(
                    "HTTP GET",
                    kind=SpanKind.CLIENT,
                    attributes=request_attributes(url, 8080),
                )
                child.set_attribute("http.response.status_code", 200)
                child.end()
                otel_context.detach(token)
                span.set_attributes(end_attributes('{"method":"GET","url":"' + url + '"}', output))
                span.end()
            return (time.thread_time() - cpu) / n * 1e6

        sides = {"ours": ours, "sdk": by_hand}
        passes = {name: [0, 0, 0] for name in sides}
        current: list[str] = ["sdk"]

        def count(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                passes[current[0]][info["generation"]] += 1

        for side in sides.values():
            side(300)
        samples: dict[str, list[float]] = {name: [] for name in sides}
        workers = [t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t.ident is not None]
        clocks = [time.pthread_getcpuclockid(t.ident) for t in workers if t.ident is not None]
        worker_cpu = 0.0
        gc.callbacks.append(count)
        try:
            for r in range(rounds):
                for name in ("ours", "sdk") if r % 2 == 0 else ("sdk", "ours"):
                    current[0] = name
                    before = sum(time.clock_gettime(c) for c in clocks)
                    samples[name].append(sides[name](calls))
                    worker_cpu += sum(time.clock_gettime(c) for c in clocks) - before
        finally:
            gc.callbacks.remove(count)
        telemetry.shutdown()
    provider.shutdown()
    return {
        "ours_cpu_us": round(statistics.median(samples["ours"]), 2),
        "sdk_cpu_us": round(statistics.median(samples["sdk"]), 2),
        "ours_minus_sdk_us": round(statistics.median(a - b for a, b in zip(samples["ours"], samples["sdk"], strict=True)), 2),
        "export_thread_cpu_us_per_call": round(worker_cpu / (2 * rounds * calls) * 1e6, 2),
        "gc_passes_per_1000": {name: [round(n * 1000 / (rounds * calls), 1) for n in counts] for name, counts in passes.items()},
    }


if __name__ == "__main__":
    import json
    import multiprocessing

    if len(sys.argv) > 1 and sys.argv[1] == "ab":
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        argv = sys.argv[2:]
        print(json.dumps(ab(argv[0] if argv else "main", *(int(a) for a in argv[1:3]))))
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        sys.exit(0)

    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        print(json.dumps(floor(*(int(a) for a in sys.argv[2:4]))))
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        sys.exit(0)

    from .bench_http import _serve

    fork = multiprocessing.get_context("fork")
    queue: Any = fork.Queue()
    proc = fork.Process(target=_serve, args=(queue,), daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=30)
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        result = compare(port, int(sys.argv[1]) if len(sys.argv) > 1 else 9, int(sys.argv[2]) if len(sys.argv) > 2 else 400)
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        for level, rows in result.items():
            print(level, json.dumps(rows))
    finally:
        proc.terminate()
