"""The flows guard's record of ``http.request`` results, old way against the tree's, in one process.

``python -m bench.ab_flows [ROUNDS] [CALLS]``: the http handler called directly (as ``bench._http_layers``'s
``d_handler``) then ``FlowGuard.record`` of its result, at 1 and 50 concurrent calls, alternating in
rounds inside one process:

* ``handler``: the handler alone (the base);
* ``old``: + the record with round 4's label batches (a write forced every 64 labels, one ``INSERT``
  statement per label in the batch's transaction);
* ``new``: + the record as the tree does it (``_guard._LABEL_BATCH`` labels per write, one multi-row
  ``INSERT`` per 128 of them).

Reported per case: the median over rounds of CPU per call (every thread), of the runtime thread's own
CPU per call (where the batches are written) and the hops to the runtime loop per call; and the median
of the neighbour differences to ``handler``. Not part of ``python -m bench``: it measures a change.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from opentelemetry.trace import INVALID_SPAN

from agent_legs import Legs
from agent_legs._flows import _guard

__all__ = ["CASES", "compare"]

CASES = ("handler", "old", "new")


def compare(port: int, rounds: int = 9, calls: int = 400) -> dict[str, Any]:
    from agent_legs._context import ActionContext
    from agent_legs.actions.http._actions import RequestInput

    url = f"http://127.0.0.1:{port}/1kb"
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        legs = stack.enter_context(Legs(workspace=Path(tmp) / "ws", state_dir=Path(tmp) / "st", policy=policy))
        legs.run("http.request", {"method": "GET", "url": url})
        pipeline, runtime = legs._pipeline, legs._runtime
        spec, flows, state = legs.get_action("http.request"), pipeline.flows, runtime.state
        runtime_clock = time.pthread_getcpuclockid(runtime._thread.ident)  # type: ignore[union-attr]
        hops = [0]
        submit = runtime.submit

        def counted(coro: Any) -> Any:
            hops[0] += 1
            return submit(coro)

        runtime.submit = counted  # type: ignore[method-assign]
        new_add, new_batch = state.add_flow_entries, _guard._LABEL_BATCH
        way = ["new"]

        async def add_flow_entries(rows: Sequence[tuple[str, str | None, str, str, str, int]]) -> None:
            if way[0] == "new":
                await new_add(rows)
                return
            sql = "INSERT INTO flow_index (session, call_id, action, label, fps, n, created) VALUES (?, ?, ?, ?, ?, ?, ?)"
            now = time.time()
            async with state._tx(durable=any(row[3] != "untrusted" for row in rows)) as tx:
                for row in rows:  # round 4: a statement per label
                    await tx.run(sql, (*row, now))

        state.add_flow_entries = add_flow_entries  # type: ignore[method-assign]
        arguments = {"method": "GET", "url": url, "headers": {}, "params": {}, "json": None, "body": None}

        async def handler() -> Any:
            ctx = ActionContext(runtime, spec, "default", None, 31.0, INVALID_SPAN)
            output = await spec.handler(ctx, RequestInput(method="GET", url=url))
            return pipeline.success(spec, output, time.perf_counter())

        async def recorded(old: bool) -> None:
            result = await handler()
            way[0] = "old" if old else "new"
            _guard._LABEL_BATCH = 64 if old else new_batch
            await flows.record("http.request", arguments, "default", None, result.output, result.data)

        async def old() -> None:
            await recorded(True)

        async def new() -> None:
            await recorded(False)

        by_case = dict(zip(CASES, (handler, old, new), strict=True))

        async def measure(name: str, total: int, concurrency: int) -> tuple[float, float, float]:
            call, sem = by_case[name], asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    await call()

            await flows.flush()  # each run starts with no label pending
            h0, rt0, cpu0 = hops[0], time.clock_gettime(runtime_clock), time.process_time()
            await asyncio.gather(*(one() for _ in range(total)))
            await flows.flush()  # and pays for the labels it left
            cpu, rt = time.process_time() - cpu0, time.clock_gettime(runtime_clock) - rt0
            return cpu / total * 1e6, rt / total * 1e6, (hops[0] - h0) / total

        async def main() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for concurrency in (1, 50):
                for name in CASES:
                    await measure(name, 100, concurrency)
                samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in CASES}
                for r in range(rounds):
                    for name in CASES if r % 2 == 0 else tuple(reversed(CASES)):
                        samples[name].append(await measure(name, calls, concurrency))
                rows: dict[str, Any] = {}
                for name in CASES:
                    s, base = samples[name], samples["handler"]
                    rows[name] = {
                        "cpu_us": round(statistics.median(x[0] for x in s), 1),
                        "runtime_thread_cpu_us": round(statistics.median(x[1] for x in s), 1),
                        "hops_per_call": round(statistics.median(x[2] for x in s), 4),
                        "added_cpu_us": round(statistics.median(x[0] - b[0] for x, b in zip(s, base, strict=True)), 1),
                    }
                out[f"c{concurrency}"] = rows
            state.add_flow_entries = new_add  # type: ignore[method-assign]
            _guard._LABEL_BATCH = new_batch
            return out

        return asyncio.run(main())


if __name__ == "__main__":
    import json
    import multiprocessing

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
            for name, row in rows.items():
                print(level, f"{name:8}", json.dumps(row))
    finally:
        proc.terminate()
