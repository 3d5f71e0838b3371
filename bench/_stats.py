"""Small timing helpers shared by every benchmark module."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


def summarize(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/mean in microseconds."""
    ordered = sorted(samples_s)
    n = len(ordered)
    return {
        "n": n,
        "p50_us": round(statistics.median(ordered) * 1e6, 2),
        "p95_us": round(ordered[min(n - 1, int(n * 0.95))] * 1e6, 2),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 2),
    }


def time_sync(fn: Callable[[], Any], iterations: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


async def time_async(fn: Callable[[], Awaitable[Any]], iterations: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(iterations):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


def alternate(cases: dict[str, Callable[[], Any]], iterations: int, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Run the cases in alternating rounds (so drift hits all equally) and summarize each."""
    samples: dict[str, list[float]] = {k: [] for k in cases}
    per_round = max(1, iterations // rounds)
    for fn in cases.values():
        time_sync(fn, 0, warmup=20)
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name] += time_sync(fn, per_round, warmup=0)
    return {k: summarize(v) for k, v in samples.items()}


def ratio(a: dict[str, float], b: dict[str, float], key: str = "p50_us") -> float:
    return round(a[key] / b[key], 3) if b.get(key) else float("nan")
