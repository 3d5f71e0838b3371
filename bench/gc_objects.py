"""What ``http.request`` gives the garbage collector, beside raw aiohttp, in one process (not a bench row).

``python -m bench.gc_objects [CONCURRENCY] [--sites]``: the bench's 1 KB server in its own process; ours
(``legs.arun("http.request", ...)``, the default layer) and raw aiohttp's ``ClientSession.get`` + ``read``
alternate in rounds. Per round and party:

* tracked allocations per call: the collector's gen-0 threshold set to 1 (every second allocation of a
  GC-tracked object starts a gen-0 pass; the older generations' thresholds out of reach), passes counted over
  200 calls; load-independent, a count, not a time;
* collections by generation per 800 calls at the default thresholds, and requests per second (load-dependent);
* ``--sites``: each tracked object alive at such a pass, by type and by the two innermost frames that were
  running when it was made (approximate: a pass sees the objects made since the last one), per call.

At 50 calls in flight each gen-0 pass promotes what the calls hold across their awaits; they die in gen 2,
and a full pass over the whole process follows (benchmarks.md, http notes, rounds 7 and 8).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._served import served_legs
from .bench_http import _serve

Call = Callable[[], Awaitable[Any]]
_seen: list[tuple[str, str]] | None = None  # (type, site) of each tracked object a pass saw, while recording


def _record(phase: str, info: dict[str, Any]) -> None:
    if _seen is None or phase != "start" or info["generation"] != 0:
        return
    frame = sys._getframe(1)  # the frame that allocated: the collector runs inside the allocation
    young = gc.get_objects(0)
    for obj in young:
        if obj is young:
            continue
        site, f = [], frame
        while f is not None and len(site) < 2:
            site.append(f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}:{f.f_code.co_name}")
            f = f.f_back
        _seen.append((type(obj).__name__, " <- ".join(site)))


async def _batch(call: Call, n: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    await asyncio.gather(*(one() for _ in range(n)))


async def _tracked_per_call(call: Call, concurrency: int, calls: int = 200) -> float:
    gc.collect()
    old = gc.get_threshold()
    gc.set_threshold(1, 10**9, 10**9)
    try:
        before = gc.get_stats()[0]["collections"]
        await _batch(call, calls, concurrency)
        return 2 * (gc.get_stats()[0]["collections"] - before) / calls
    finally:
        gc.set_threshold(*old)


async def _sites(name: str, call: Call, calls: int = 20) -> None:
    global _seen  # the callback's switch
    gc.collect()
    _seen = []
    gc.callbacks.append(_record)
    gc.set_threshold(1, 10**9, 10**9)
    try:
        for _ in range(calls):
            await call()
    finally:
        gc.set_threshold(700, 10, 10)
        gc.callbacks.remove(_record)
        seen, _seen = _seen, None
    print(f"== {name}: {len(seen) / calls:.1f} tracked objects seen per call")
    types = collections.Counter(t for t, _ in seen)
    print("  types:", ", ".join(f"{t} {k / calls:.1f}" for t, k in types.most_common(20)))
    for (t, site), k in collections.Counter(seen).most_common(60):
        print(f"  {k / calls:5.1f} {t:24s} {site}")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    concurrency = int(args[0]) if args else 50
    with served_legs(_serve) as (legs, port):
        url = f"http://127.0.0.1:{port}/1kb"

        async def run() -> None:
            import aiohttp

            async with aiohttp.ClientSession() as session:

                async def ours() -> None:
                    r = await legs.arun("http.request", {"method": "GET", "url": url})
                    assert r.ok, r.output

                async def raw() -> None:
                    async with session.get(url) as response:
                        response.raise_for_status()
                        await response.read()

                calls = {"ours": ours, "raw aiohttp": raw}
                for call in calls.values():
                    await _batch(call, 300, concurrency)
                if "--sites" in sys.argv:
                    for name, call in calls.items():
                        await _sites(name, call)
                    return
                print(f"{concurrency} in flight; load average {os.getloadavg()[0]:.1f}")
                for _ in range(3):
                    for name, call in calls.items():
                        tracked = await _tracked_per_call(call, concurrency)
                        gc.collect()
                        before = [g["collections"] for g in gc.get_stats()]
                        t0 = time.perf_counter()
                        await _batch(call, 800, concurrency)
                        rate = 800 / (time.perf_counter() - t0)
                        passes = [g["collections"] - b for g, b in zip(gc.get_stats(), before, strict=True)]
                        print(
                            f"  {name:12s} tracked allocations per call {tracked:6.1f}  "
                            f"collections per 800 calls (gen 0, 1, 2) {passes}  {rate:7.0f} req/s"
                        )

        asyncio.run(run())


if __name__ == "__main__":
    main()
