"""Formatting helpers of the benchmark report: durations, ratios, marks, markdown tables, changes."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["change", "div", "get", "mark", "p50", "t", "table", "x"]


def t(us: float | None) -> str:
    """A duration given in microseconds, in the unit that reads best."""
    if us is None or (isinstance(us, float) and math.isnan(us)):
        return "—"
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.3g} ms" if us < 100_000 else f"{us / 1000:.0f} ms"
    return f"{us / 1e6:.2f} s"


def x(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}×"


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗ missed")


def get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def p50(obj: Any, *path: str, key: str = "p50_us") -> float | None:
    v = get(obj, *path, key)
    return float(v) if isinstance(v, int | float) else None


def div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def change(now: float | None, before: float | None) -> str:
    """A p50 against the previous run's: the previous figure and the change in percent (+: slower)."""
    if now is None or not before:
        return "— (new)"
    return f"{t(before)} → {(now - before) / before:+.0%}"
