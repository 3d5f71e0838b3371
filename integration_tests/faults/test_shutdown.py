"""Shutdown with an OTLP collector that accepts connections and never answers.

Guarantees checked (docs/reliability.md): ``close()`` returns within 2 s and the interpreter exits
within 3 s after it, whatever the collector does; spans that never reached it are counted
(``Legs.spans_dropped``) and reported in one warning; the action log is complete. Measured in a child
process, where the interpreter's exit (and the SDK's exit hooks) really happen.
"""

from __future__ import annotations

import json
import time

import pytest

CHILD = """
import json, time
from agent_legs import Legs

legs = Legs(workspace={ws!r}, state_dir={st!r})
for i in range({n}):
    assert legs.run("files.write", {{"path": f"f{{i % 50}}.txt", "content": str(i)}}).ok
{close}
print(json.dumps({{"close_s": close_s, "dropped": legs.spans_dropped, "closed_at": time.time()}}), flush=True)
"""
CLOSE = """t0 = time.monotonic()
legs.close()
close_s = time.monotonic() - t0"""
AT_EXIT = "close_s = None  # never closed: the exit hook closes it"


@pytest.mark.parametrize(("n", "closed"), [(3000, True), (200, False)], ids=["3000-actions-close", "200-actions-at-exit"])
def test_hung_collector_bounds_close_and_exit(dirs, hung_listener, python_child, n, closed) -> None:
    ws, st = dirs
    host, port = hung_listener
    proc = python_child(
        CHILD.format(ws=str(ws), st=str(st), n=n, close=CLOSE if closed else AT_EXIT),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host}:{port}"},
    )
    out, err = proc.communicate(timeout=180)
    exited_at = time.time()
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    exit_s = exited_at - report["closed_at"]
    print(f"\n{n} actions: close() {report['close_s']} s, exit {exit_s:.2f} s after it")
    if closed:
        assert report["close_s"] <= 2.0, report
        assert report["dropped"] == n, report  # nothing reached the collector, all counted
        assert exit_s <= 3.0, exit_s
    else:
        assert exit_s <= 2.0 + 3.0, exit_s  # close() at exit, then the interpreter's own exit
    # One warning with the number (not one per span or per batch), and the log is complete.
    assert f"{n} span(s) were dropped" in err, err[-3000:]
    assert err.count("were dropped") == 1 and "Queue full" not in err
    lines = [json.loads(x) for x in (st / "actions.jsonl").read_text().splitlines() if x.strip()]
    assert len(lines) == n and all(e["outcome"] == "ok" for e in lines)
