"""The scale chart of ``docs/benchmarks.md`` (``docs/img/scale.svg``), drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._format import p50 as _p50

__all__ = ["chart"]


def chart(scale: dict[str, Any], path: Path) -> bool:
    """Throughput, p95 per action and memory per session against sessions, as one SVG."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed: chart not drawn (pip install -r bench/requirements.txt)")
        return False
    sizes = scale.get("sizes") or []
    if not sizes:
        return False
    plt.rcParams["svg.hashsalt"] = "agent-legs-bench"  # stable ids: the file changes only with the numbers
    plt.rcParams["svg.fonttype"] = "none"
    n = [s["sessions"] for s in sizes]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8))
    a1.plot(n, [s["throughput_actions_s"] for s in sizes], "o-", color="#3f51b5")
    a1.set_title("throughput (actions/s)")
    a1.set_ylim(bottom=0)
    for action in scale.get("workload") or []:
        vals = [(s["sessions"], _p50(s, "latency", action, key="p95_us")) for s in sizes]
        pts = [(k, v / 1000) for k, v in vals if v]
        if pts:
            a2.plot(*zip(*pts, strict=True), "o-", label=action)
    a2.set_yscale("log")
    a2.set_title("p95 latency per action (ms)")
    a2.legend(fontsize=7)
    keys = [
        ("our_rss_growth_mb", "our process"),
        ("chromium_pss_mb", "Chromium"),
        ("playwright_driver_pss_mb", "Playwright driver"),
        ("containers_mb", "sandbox containers"),
    ]
    bottom = [0.0] * len(sizes)
    labels = [str(k) for k in n]
    for key, label in keys:
        vals = [s["memory"][key] / s["sessions"] for s in sizes]
        a3.bar(labels, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    a3.set_title("memory per session (MB)")
    a3.set_xlabel("concurrent sessions")
    a3.legend(fontsize=7)
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(k) for k in n])
        ax.set_xlabel("concurrent sessions")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".") or "svg", metadata={"Date": None})
    plt.close(fig)
    return True
