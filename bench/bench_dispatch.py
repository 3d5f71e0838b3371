"""Where an inline action's coroutine runs, and what it saves: files.read and http.request.

The same action is called through two registries: the real one (``inline=True``: the coroutine runs
on the caller's own loop, or on the calling thread's private loop for a synchronous ``run``) and a
copy whose specs say ``inline=False`` (every call hops to the runtime thread). The handlers, the
policy, the span and the log line are the same; only the dispatch differs. ``files.read`` of a
1.5 KB file (``run`` and ``arun``), and ``http.request`` GET of a 1 KB response from an aiohttp
server in its own process (``arun``, and ``run`` from a plain thread). Cases alternate in rounds so
drift hits both sides alike. ``agent_legs._dispatch`` keeps the inline path only because of these
numbers (``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent_legs import ActionRegistry, Legs
from agent_legs._registry import REGISTRY

from ._served import serving
from ._stats import alternate, summarize, time_async
from .bench_http import _serve


def _hopping_registry() -> ActionRegistry:
    """The built-in actions, none of them inline: every call goes through the runtime thread."""
    registry = ActionRegistry()
    for spec in REGISTRY:
        registry.register(dataclasses.replace(spec, inline=False))
    return registry


async def _alternate_async(cases: dict[str, Callable[[], Awaitable[Any]]], iterations: int, rounds: int = 5) -> dict[str, Any]:
    samples: dict[str, list[float]] = {k: [] for k in cases}
    per_round = max(1, iterations // rounds)
    for fn in cases.values():
        await time_async(fn, 0, warmup=20)
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name] += await time_async(fn, per_round, warmup=0)
    return {k: summarize(v) for k, v in samples.items()}


def _saved(results: dict[str, Any], inline: str, hop: str) -> float:
    return round(results[hop]["p50_us"] - results[inline]["p50_us"], 2)


def run(iterations: int) -> dict[str, Any]:
    with serving(_serve) as port:
        url = f"http://127.0.0.1:{port}/1kb"
        policy = {"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}
        with tempfile.TemporaryDirectory() as tmp:
            ws = Path(tmp) / "ws"
            ws.mkdir()
            (ws / "notes.txt").write_text("".join(f"line {i}: some text for the benchmark\n" for i in range(40)))
            with (
                Legs(workspace=ws, state_dir=Path(tmp) / "st-inline", policy=policy) as inline,
                Legs(workspace=ws, state_dir=Path(tmp) / "st-hop", policy=policy, registry=_hopping_registry()) as hop,
            ):
                read = {"path": "notes.txt"}
                get = {"method": "GET", "url": url}
                for legs in (inline, hop):
                    assert legs.run("files.read", read).ok
                    assert legs.run("http.request", get).ok, legs.run("http.request", get).output
                sync = alternate(
                    {
                        "files_read_run_inline": lambda: inline.run("files.read", read),
                        "files_read_run_hop": lambda: hop.run("files.read", read),
                        "http_request_run_inline": lambda: inline.run("http.request", get),
                        "http_request_run_hop": lambda: hop.run("http.request", get),
                    },
                    iterations,
                )

                async def main() -> dict[str, Any]:
                    return await _alternate_async(
                        {
                            "files_read_arun_inline": lambda: inline.arun("files.read", read),
                            "files_read_arun_hop": lambda: hop.arun("files.read", read),
                            "http_request_arun_inline": lambda: inline.arun("http.request", get),
                            "http_request_arun_hop": lambda: hop.arun("http.request", get),
                        },
                        iterations,
                    )

                results = sync | asyncio.run(main())
    return {
        "cases": results,
        "saved_by_inline_p50_us": {
            f"{action} {call}": _saved(results, f"{key}_{call}_inline", f"{key}_{call}_hop")
            for action, key in (("files.read", "files_read"), ("http.request", "http_request"))
            for call in ("run", "arun")
        },
        "notes": "p50 in microseconds; inline: the action's coroutine on the caller's loop (arun) or the "
        "calling thread's private loop (run); hop: on the runtime thread's loop, the caller waits on a future.",
    }
