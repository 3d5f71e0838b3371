"""The overhead budget table (issue 20, item 5): the no-op pipeline and each feature of the wave,
its cost per action and how it grows, from the ``core``, ``flows`` and ``budget`` modules' results."""

from __future__ import annotations

from typing import Any

from ._format import get, mark, p50, t, table

__all__ = ["budget"]


def _growth(values: list[tuple[str, float | None]]) -> str:
    return " → ".join(f"{t(v)} at {label}" for label, v in values if v is not None) or "—"


def budget(res: dict[str, Any]) -> str:
    core, flows, store = res.get("core") or {}, res.get("flows") or {}, res.get("budget") or {}
    rows: list[list[str]] = []
    loop = get(core, "overhead_budget", "execute_in_runtime_loop_p50_us")
    rows.append(
        [
            "no-op action, in-loop pipeline (`CallPipeline.execute`, span and log line included)",
            t(loop),
            "flat (per action)",
            "≤ 50 µs",
            mark(None if loop is None else loop <= 50),
        ]
    )
    sink = [(size, get(flows, "sink", size, "guard_us")) for size in ("200b", "4kb")]
    rows.append(
        ["flows guard, per sink call (session read 64 KB)", t(sink[0][1]), _growth(sink) + " of payload", "reported", "—"]
    )
    per_kb = [(f"{kb} KB", get(flows, "read", f"{kb}kb", "guard_us_per_kb")) for kb in (1, 16, 64)]
    rows.append(
        [
            "flows guard, per KB a private source reads",
            t(per_kb[-1][1]),
            "per KB: " + _growth(per_kb) + " read",
            "reported",
            "—",
        ]
    )
    q = store.get("approval_queue") or {}
    listing = [(k.split("_with_")[1].replace("_", " "), p50(v)) for k, v in q.items() if k.startswith("pending_list")]
    rows.append(
        [
            "approval queue, one request enqueued and decided (two durable transactions)",
            t(p50(q, "enqueue_and_decide")),
            "the pending list: " + _growth(listing),
            "reported",
            "—",
        ]
    )
    s = store.get("state_store") or {}
    counters = [(k.split("_with_")[1].replace("_", " "), p50(v)) for k, v in s.items()]
    rows.append(
        [
            "state store, one budget counter consumed (one transaction, not fsync'd)",
            t(counters[0][1] if counters else None),
            _growth(counters),
            "reported",
            "—",
        ]
    )
    labels = store.get("flow_labels") or {}
    rows.append(
        [
            "state store, the guard's rows: an untrusted label / a private row of 1,000 fingerprints (fsync'd)",
            f"{t(p50(labels, 'untrusted_label'))} / {t(p50(labels, 'private_row_1000_fingerprints'))}",
            "untrusted labels are written in batches (one per 64 calls or per second)",
            "reported",
            "—",
        ]
    )
    return table(["what", "p50 per action", "how it grows", "target", "met"], rows)
