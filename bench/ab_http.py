"""In-process A/B of ``http.request``'s pipeline: ``CallPipeline.execute`` of an older commit against this tree's.

``python -m bench.ab_http REF [ROUNDS] [CALLS] [CONCURRENCY]``: as ``bench.ab_core`` (the pipeline and
telemetry modules of REF loaded beside this tree's, the rest of ``agent_legs`` shared), but the action is
``http.request`` (a 1 KB GET from a server in its own process), run on the caller's loop as ``arun`` runs
it (inline), CONCURRENCY calls in flight. Rounds alternate old and new (order swapped every round);
printed: the median over rounds of each side's CPU time per call (the whole process) and p50 wall time
per call, and the medians of the neighbour differences (old minus new: positive is a saving), with the
collector's gen-0 and full collections per 1,000 calls, and the CPU outside the collector (a full
collection, ~40 ms, landing in one round of 600 calls adds ~70 us per call to it: the largest noise).
Not part of ``python -m bench``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opentelemetry import context

from agent_legs import Legs

from ._served import serving
from .ab_core import load
from .bench_http import _serve

_gc = [0.0, 0.0]  # seconds in the collector, start of the running collection


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc[1] = time.perf_counter()
    else:
        _gc[0] += time.perf_counter() - _gc[1]


def main(port: int, ref: str, rounds: int, calls: int, concurrency: int) -> None:
    old = load(ref, "abold")
    gc.callbacks.append(_gc_callback)
    url = f"http://127.0.0.1:{port}/1kb"
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Legs(workspace=root / "ws", state_dir=root / "st", policy=policy) as legs:
            runtime, tree = legs._runtime, legs._pipeline
            (root / "st-old").mkdir()
            old_t = old["_facade"].Telemetry(legs.settings.telemetry, root / "st-old", runtime.redactor)
            old_p = old["_pipeline"].CallPipeline(runtime, old_t, tree.approvals, tree._approver)
            spec = legs.get_action("http.request")
            legs.run("http.request", {"method": "GET", "url": url})  # starts the service

            async def one(p: Any, n: int) -> tuple[float, float, float, float, float]:
                execute, parent, clock = p.execute, context.get_current(), time.perf_counter
                sem, walls = asyncio.Semaphore(concurrency), []

                async def call() -> None:
                    async with sem:
                        t = clock()
                        r = await execute(spec, {"method": "GET", "url": url}, "s", None, parent)
                        walls.append(clock() - t)
                        assert r.ok, r.output

                g0, g2 = gc.get_stats()[0]["collections"], gc.get_stats()[2]["collections"]
                _gc[0] = 0.0
                cpu = time.process_time()
                await asyncio.gather(*(call() for _ in range(n)))
                cpu = (time.process_time() - cpu) / n * 1e6
                g0 = (gc.get_stats()[0]["collections"] - g0) / n * 1000
                g2 = (gc.get_stats()[2]["collections"] - g2) / n * 1000
                return statistics.median(walls) * 1e6, cpu, g0, g2, cpu - _gc[0] / n * 1e6

            async def alternate() -> dict[str, list[tuple[float, float, float, float, float]]]:
                await one(old_p, 300)
                await one(tree, 300)
                out: dict[str, list[tuple[float, float, float, float, float]]] = {"old": [], "new": []}
                for r in range(rounds):
                    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                        out[side].append(await one(old_p if side == "old" else tree, calls))
                return out

            print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
            res = asyncio.run(alternate())
            print("load average", os.getloadavg(), time.strftime("%H:%M:%S", time.gmtime()), file=sys.stderr)
            old_t.shutdown()
    o, n = res["old"], res["new"]

    def med(rows: list[tuple[float, ...]], i: int) -> float:
        return statistics.median(x[i] for x in rows)

    wall = statistics.median(a[0] - b[0] for a, b in zip(o, n, strict=True))
    cpu = statistics.median(a[1] - b[1] for a, b in zip(o, n, strict=True))
    nogc = statistics.median(a[4] - b[4] for a, b in zip(o, n, strict=True))
    print(
        f"{ref} -> tree, http.request at {concurrency} in flight, {rounds} rounds x {calls} calls: "
        f"old p50 {med(o, 0):.1f} us CPU {med(o, 1):.1f} us (gen0 {med(o, 2):.0f}, full {med(o, 3):.1f} per 1,000); "
        f"new p50 {med(n, 0):.1f} us CPU {med(n, 1):.1f} us (gen0 {med(n, 2):.0f}, full {med(n, 3):.1f} per 1,000); "
        f"saved per call: p50 {wall:+.1f} us, CPU {cpu:+.1f} us, CPU outside the collector {nogc:+.1f} us "
        f"(old {med(o, 4):.1f}, new {med(n, 4):.1f})"
    )


if __name__ == "__main__":
    with serving(_serve) as port:
        main(
            port,
            sys.argv[1] if len(sys.argv) > 1 else "main",
            int(sys.argv[2]) if len(sys.argv) > 2 else 20,
            int(sys.argv[3]) if len(sys.argv) > 3 else 600,
            int(sys.argv[4]) if len(sys.argv) > 4 else 50,
        )
