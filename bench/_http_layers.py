"""The layer budget of ``http.request``: CPU per call, each layer added on top of the last, in one process.

Layers (the same 1 KB GET from a server in its own process, the same event loop):

* ``a_raw``: raw aiohttp ``ClientSession.get`` + ``read`` (the ceiling);
* ``b_exchange``: our ``AiohttpClient.exchange`` with the guard-pinned connector, inside an ``asyncio.timeout``;
* ``c_guard``: + the egress guard's ``check_target`` of the URL;
* ``d_handler``: the http handler called directly (its span, timeout, headers, result), + the pipeline's
  ``success`` (redaction and bounding of the result);
* ``d_flows``: + the flows guard's sink check and its record of the response;
* ``e_arun``: the whole ``legs.arun("http.request", ...)`` (validation, policy, intent line, span,
  outcome line);
* ``f_traced``: the same with a recording ``BatchSpanProcessor`` (a null exporter).

The layers alternate in rounds inside one process (the VM's speed moves between runs); per layer the
median over rounds of CPU per call (this process, every thread) and of the neighbour difference (this
layer minus the one below it, in the same round) are reported, with gen-0 collections per call.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import INVALID_SPAN

from agent_legs import Legs

__all__ = ["GC_BY_GENERATION", "LAYERS", "layer_budget"]

Call = Callable[[], Awaitable[Any]]
LAYERS = ("a_raw", "b_exchange", "c_guard", "d_handler", "d_flows", "e_arun", "f_traced")


_gc_time = [0.0, 0.0]  # seconds in the collector since the last reset, start of the running collection
GC_BY_GENERATION = [[0, 0.0], [0, 0.0], [0, 0.0]]  # collections and seconds per generation, whole run


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_time[1] = time.perf_counter()
    else:
        spent = time.perf_counter() - _gc_time[1]
        _gc_time[0] += spent
        GC_BY_GENERATION[info["generation"]][0] += 1
        GC_BY_GENERATION[info["generation"]][1] += spent


async def _cpu_per_call(call: Call, total: int, concurrency: int) -> tuple[float, float, float, float]:
    """(CPU µs per call, wall µs per call, gen-0 collections per 1,000 calls, µs in the collector per call)."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    gen0 = gc.get_stats()[0]["collections"]
    _gc_time[0] = 0.0
    t0, cpu0 = time.perf_counter(), time.process_time()
    if concurrency == 1:
        for _ in range(total):
            await call()
    else:
        await asyncio.gather(*(one() for _ in range(total)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    gen0 = gc.get_stats()[0]["collections"] - gen0
    return cpu / total * 1e6, wall / total * 1e6, gen0 / total * 1000, _gc_time[0] / total * 1e6


def layer_budget(port: int, rounds: int = 7, calls: int = 400) -> dict[str, Any]:
    """The budget at 1 and 50 concurrent calls (a server on ``127.0.0.1:port`` serving ``/1kb``)."""
    import aiohttp

    from agent_legs._context import ActionContext
    from agent_legs.actions.http._actions import RequestInput
    from agent_legs.actions.http._service import service_for

    gc.callbacks.append(_gc_callback)
    url = f"http://127.0.0.1:{port}/1kb"
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        legs = stack.enter_context(Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st", policy=policy))
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_NullExporter()))
        traced = stack.enter_context(
            Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st-t", policy=policy, tracer_provider=provider)
        )
        stack.callback(provider.shutdown)
        legs.run("http.request", {"method": "GET", "url": url})  # starts the service
        pipeline = legs._pipeline
        runtime = legs._runtime
        spec = legs.get_action("http.request")
        flows = pipeline.flows

        async def main() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with aiohttp.ClientSession() as raw:

                async def a_raw() -> None:
                    async with raw.get(url) as r:
                        await r.read()

                first = await legs.arun("http.request", {"method": "GET", "url": url})
                assert first.ok, first.output
                svc = await service_for(ActionContext(runtime, spec, "default", None, 31.0, INVALID_SPAN))
                client = await svc.client_for_loop()
                guard = runtime.egress
                cap = runtime.policy.http.max_response_bytes

                async def b_exchange() -> None:
                    async with asyncio.timeout(30):
                        await client.exchange("GET", url, svc.base_headers.copy(), None, cap, 30)

                async def c_guard() -> None:
                    guard.check_target(url)
                    async with asyncio.timeout(30):
                        await client.exchange("GET", url, svc.base_headers.copy(), None, cap, 30)

                async def d_handler() -> None:
                    args = RequestInput(method="GET", url=url)
                    ctx = ActionContext(runtime, spec, "default", None, 31.0, INVALID_SPAN)
                    output = await spec.handler(ctx, args)
                    pipeline.success(spec, output, time.perf_counter())

                arguments = {"method": "GET", "url": url, "headers": {}, "params": {}, "json": None, "body": None}

                async def d_flows() -> None:
                    await flows.check("http.request", arguments, "default")
                    args = RequestInput(method="GET", url=url)
                    ctx = ActionContext(runtime, spec, "default", None, 31.0, INVALID_SPAN)
                    output = await spec.handler(ctx, args)
                    result = pipeline.success(spec, output, time.perf_counter())
                    await flows.record("http.request", arguments, "default", None, result.output, result.data)

                async def e_arun() -> None:
                    r = await legs.arun("http.request", {"method": "GET", "url": url})
                    assert r.ok

                async def f_traced() -> None:
                    r = await traced.arun("http.request", {"method": "GET", "url": url})
                    assert r.ok

                calls_by_layer = dict(
                    zip(LAYERS, (a_raw, b_exchange, c_guard, d_handler, d_flows, e_arun, f_traced), strict=True)
                )
                for concurrency in (1, 50):
                    samples: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in LAYERS}
                    for call in calls_by_layer.values():  # warm-up
                        await _cpu_per_call(call, 50, concurrency)
                    for r in range(rounds):
                        order = LAYERS if r % 2 == 0 else tuple(reversed(LAYERS))
                        for name in order:
                            samples[name].append(await _cpu_per_call(calls_by_layer[name], calls, concurrency))
                    rows = {}
                    for i, name in enumerate(LAYERS):
                        cpu = [s[0] for s in samples[name]]
                        below = LAYERS[i - 1] if i and name != "f_traced" else ("e_arun" if i else None)
                        diff = [s[0] - b[0] for s, b in zip(samples[name], samples[below], strict=True)] if below else []
                        rows[name] = {
                            "cpu_us": round(statistics.median(cpu), 1),
                            "wall_us": round(statistics.median(s[1] for s in samples[name]), 1),
                            "gen0_per_1000": round(statistics.median(s[2] for s in samples[name]), 1),
                            "gc_us": round(statistics.median(s[3] for s in samples[name]), 1),
                            "added_cpu_us": round(statistics.median(diff), 1) if diff else None,
                        }
                    out[f"c{concurrency}"] = rows
            return out

        return asyncio.run(main())


class _NullExporter:
    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


if __name__ == "__main__":
    import json
    import os
    import sys

    from ._served import serving
    from .bench_http import _serve

    with serving(_serve) as port:
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        result = layer_budget(port, rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 7)
        print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
        print("gc by generation (collections, seconds):", GC_BY_GENERATION, "objects", len(gc.get_objects()))
        for level, rows in result.items():
            print(level)
            for name, row in rows.items():
                print(f"  {name:11} {json.dumps(row)}")
