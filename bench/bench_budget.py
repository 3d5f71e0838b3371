"""The overhead budget of this wave's features (issue 20, item 5): what each costs per action and how
it grows, on the default SQLite state store, timed on the store's own loop (no thread hop).

* ``state_store``: one budget counter consumed (what every call under ``policy.budgets`` pays: one
  transaction, not fsync'd), with 0, 1,000 and 10,000 other counters in the table (how it grows per row).
* ``approval_queue``: one request enqueued and decided (two durable transactions: what
  ``approver="queue"`` adds to a call, besides the human), and the pending list an approver's page
  reads, with 10, 100 and 1,000 requests pending (how it grows per pending request).
* ``flow_labels``: one untrusted label row (not fsync'd) and one private row of 1,000 fingerprints
  (fsync'd), the rows the exfiltration guard writes (its per-KB and per-sink costs are ``flows``).

The no-op action's in-loop pipeline (span and log line included) is ``core``; ``--report`` puts the
three together in the budget table.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from ._stats import summarize


async def _time(fn: Any, n: int) -> dict[str, float]:
    for _ in range(min(10, n)):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return summarize(out)


async def _measure(state_dir: Path, n: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    from agent_legs._flows._index import encode_fps
    from agent_legs._state._sqlite import SqliteStore

    store = SqliteStore(state_dir / "state.sqlite3", state_dir=state_dir)
    try:
        budget: dict[str, Any] = {}
        filled = 0
        for size in sizes:
            for i in range(filled, size):  # other counters in the table (other budgets, sessions, windows)
                await store.consume_budget([(f"other-{i}", "2026-12-03", 10**9)])
            filled = size

            async def consume() -> None:
                await store.consume_budget([("bench", "2026-12-03", 10**9)])

            budget[f"consume_one_counter_with_{size}_rows"] = await _time(consume, n)
        queue: dict[str, Any] = {}

        async def round_trip() -> None:
            row = await store.enqueue_approval(
                action="email.send",
                tool_name="email_send",
                arguments={"to": ["a@example.com"], "subject": "s", "body": "b"},
                session="bench",
                reason="rule",
                call_id=None,
                timeout_s=600,
            )
            await store.decide_approval(row.id, "approved", by="bench")

        queue["enqueue_and_decide"] = await _time(round_trip, n)
        pending = 0
        for size in (10, 100, 1000):
            for _ in range(pending, size):
                await store.enqueue_approval(
                    action="email.send",
                    tool_name="email_send",
                    arguments={},
                    session="p",
                    reason="r",
                    call_id=None,
                    timeout_s=3600,
                )
            pending = size

            async def listing() -> None:
                await store.pending_approvals()

            queue[f"pending_list_with_{size}_pending"] = await _time(listing, max(5, n // 5))
        fps = encode_fps(range(1000))

        async def untrusted() -> None:
            await store.add_flow_entry("bench", "c", "http.request", "untrusted", "", 0)

        async def private() -> None:
            await store.add_flow_entry("bench-p", "c", "files.read", "private", fps, 1000)

        flows = {"untrusted_label": await _time(untrusted, n), "private_row_1000_fingerprints": await _time(private, n)}
        return {"state_store": budget, "approval_queue": queue, "flow_labels": flows}
    finally:
        await store.aclose()


def run(iterations: int, smoke: bool = False) -> dict[str, Any]:
    n = min(iterations, 20) if smoke else min(iterations, 300)
    sizes = (0, 100) if smoke else (0, 1000, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_measure(Path(tmp), n, sizes))
    result["notes"] = (
        "SQLite state store in a temporary directory on the project's disk, timed on the store's loop; "
        "durable transactions fsync (their cost is mostly the disk's)"
    )
    return result
