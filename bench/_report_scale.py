"""The scale blocks of ``docs/benchmarks.md`` (``bench/bench_scale.py``): the summary's rows (issue 20, item 4
and the resource half of item 2: 64 sessions with no failed action and >= 30 actions/s, Chromium CPU per action
<= 40 ms, memory per idle session <= 50 MB) and the section's tables (the curve: throughput, latency, CPU and
memory per party, Chromium by process type, why actions failed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._format import mark, t, table
from ._format import p50 as _p50

__all__ = ["scale_block", "scale_summary_rows"]

TARGET_SESSIONS = 64


def scale_summary_rows(res: dict[str, Any]) -> list[list[str]]:
    """The summary's scale rows: [family, what, ours, peer, ratio, target, met mark]."""
    sizes = (res.get("scale") or {}).get("sizes") or []
    if not sizes:
        return []
    top = sizes[-1]
    at = next((s for s in sizes if s["sessions"] == TARGET_SESSIONS), None)
    acc = all(s["accounting"]["one_span_and_one_line_per_action"] for s in sizes)
    rows = [
        [
            "scale",
            f"{top['sessions']} concurrent sessions, mixed workload",
            f"{top['throughput_actions_s']:.0f} actions/s",
            "—",
            "—",
            "one span + one log line per action",
            mark(acc),
        ]
    ]
    if at is None:
        return rows
    failed = sum((at.get("errors") or {}).values())
    rows.append(
        [
            "scale",
            f"{TARGET_SESSIONS} sessions: throughput, failed actions",
            f"{at['throughput_actions_s']:.0f} actions/s, {failed} failed",
            "—",
            "—",
            "≥ 30 actions/s, 0 failed",
            mark(at["throughput_actions_s"] >= 30 and failed == 0),
        ]
    )
    cpu = (at.get("cpu_ms_per_action") or {}).get("chromium")
    rows.append(
        [
            "scale",
            f"Chromium CPU per action at {TARGET_SESSIONS} sessions",
            "—" if cpu is None else f"{cpu:.0f} ms",
            "—",
            "—",
            "≤ 40 ms",
            mark(None if cpu is None else cpu <= 40),
        ]
    )
    mem = (at.get("memory") or {}).get("per_session_mb")
    rows.append(
        [
            "scale",
            f"memory per idle session at {TARGET_SESSIONS} sessions",
            "—" if mem is None else f"{mem:.0f} MB",
            "—",
            "—",
            "≤ 50 MB",
            mark(None if mem is None else mem <= 50),
        ]
    )
    return rows


def scale_block(scale: dict[str, Any], chart: Path | None) -> str:
    if "error" in scale:
        return f"**scale: not measured** — `{scale['error']}`"
    sizes = scale["sizes"]
    rows = []
    for s in sizes:
        m, a = s["memory"], s["accounting"]
        rows.append(
            [
                str(s["sessions"]),
                f"{s['throughput_actions_s']:.0f}",
                f"{s['ramp_s']:.1f} s",
                f"{s['close_s']:.1f} s",
                f"{s['cpu_busy_of_cores']:.0%} / {s['machine_cpu_busy']:.0%}"
                if "machine_cpu_busy" in s
                else f"{s['cpu_busy_of_cores']:.0%}",
                f"{m['per_session_mb']:.0f} MB",
                (
                    f"{m['our_rss_growth_mb']:.0f} / {m['chromium_pss_mb']:.0f} / {m['playwright_driver_pss_mb']:.0f} / "
                    f"{m['containers_mb']:.0f} ({m['containers_running']})"
                ),
                f"{a['actions_issued']} / {a['execute_tool_spans']} / {a['action_log_lines']} "
                + ("✓" if a["one_span_and_one_line_per_action"] else "✗"),
                ", ".join(f"{k} ×{v}" for k, v in s.get("errors", {}).items()) or "none",
            ]
        )
    out = [
        table(
            [
                "sessions",
                "actions/s",
                "ramp",
                "close",
                "CPU busy: counted / machine",
                "memory / session",
                "MB: ours / Chromium / driver / containers (n)",
                "actions / spans / log lines",
                "failed",
            ],
            rows,
        )
    ]
    actions = list(scale.get("workload") or sizes[0]["latency"].keys())
    rows = [
        [f"`{a}`"] + [f"{t(_p50(s, 'latency', a))} / {t(_p50(s, 'latency', a, key='p95_us'))}" for s in sizes] for a in actions
    ]
    out.append(
        "Latency per action, p50 / p95, steady phase:\n\n"
        + table(["action"] + [f"{s['sessions']} session(s)" for s in sizes], rows)
    )
    parties = list(sizes[0].get("cpu_ms_per_action", {}).keys())
    rows = [[p] + [f"{s['cpu_ms_per_action'].get(p, 0):.2f}" for s in sizes] for p in parties]
    out.append(
        "CPU milliseconds per action, by who spends them (steady phase):\n\n"
        + table(["party"] + [f"{s['sessions']} session(s)" for s in sizes], rows)
    )
    kinds = sorted({k for s in sizes for k in s.get("chromium_cpu_ms_per_action", {})})
    if kinds:
        rows = [
            [k]
            + [
                f"{s.get('chromium_cpu_ms_per_action', {}).get(k, 0):.2f} ms, "
                f"{s.get('chromium_processes', {}).get(k, 0)} proc., {s.get('chromium_pss_mb', {}).get(k, 0):.0f} MB"
                for s in sizes
            ]
            for k in kinds
        ]
        out.append(
            "Chromium by process type: CPU per action (steady phase), processes and PSS with every session idle "
            "(`zygote` counts the renderers that ended during the phase):\n\n"
            + table(["process"] + [f"{s['sessions']} session(s)" for s in sizes], rows)
        )
    if all("idle_cpu_ms_per_s" in s for s in sizes):
        rows = [[p] + [f"{s['idle_cpu_ms_per_s'].get(p, 0):.0f}" for s in sizes] for p in parties]
        out.append(
            "CPU milliseconds per second with every session idle (pages open, kernels waiting):\n\n"
            + table(["party"] + [f"{s['sessions']} session(s)" for s in sizes], rows)
        )
    bends = scale.get("bends") or {}
    if bends:
        rows = [
            [k, f"{v['throughput_gain']:.2f}×", f"{v['efficiency']:.0%}", f"{v['marginal_mb_per_session']:.0f} MB"]
            for k, v in bends.items()
        ]
        out.append(
            "From one size to the next:\n\n"
            + table(["sessions", "throughput gain", "scaling efficiency", "marginal memory / session"], rows)
        )
    if chart is not None:
        out.append(f"![Throughput, p95 latency and memory per session against concurrent sessions]({chart.as_posix()})")
    why = [(s["sessions"], k, m) for s in sizes for k, m in (s.get("error_messages") or {}).items()]
    if why:
        out.append(
            "Why actions failed (the first message of each kind):\n\n"
            + "\n".join(f"- {n} sessions, `{k}`: {m}" for n, k, m in why)
        )
    out.append(f"*Memory counts:* {scale.get('memory_counts', '')}. *CPU:* {scale.get('cpu_counts', '')}.")
    return "\n\n".join(out)
