"""The exfiltration guard's cost (issue 18): per KB a private source reads, and per sink call.

* ``read``: ``files.read`` of 1, 16 and 64 KB files with ``policy.flows.mode = "off"`` and with the
  guard on (the default), alternated; the difference over the size is the guard's cost per KB read
  (fingerprinting every 12-character window and one row in the state store), each a first read of its
  text (the guard's memo of texts read lately emptied before each call).
* ``sink``: ``http.request`` POSTs to a loopback server that is not trusted, from a session that has
  read 64 KB of private text, with a 200-byte and a 4 KB body of the agent's own words (nothing is
  found, so the call runs): the difference is the guard's cost per sink call (the index refresh, the
  decoded views, the lookups).
* ``corpus``: attack success rate and benign pass rate of the http channel of the corpus
  (packages/agent-legs/tests/flows_corpus.py), as a harness check.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

from agent_legs import Legs

from ._stats import alternate

_TESTS = Path(__file__).resolve().parent.parent / "packages" / "agent-legs" / "tests"


def _text(kb: int) -> str:
    line = "Order {i:06d}: customer ref {r:08x}, shipped to warehouse {w} on day {d}.\n"
    out, i = [], 0
    while sum(map(len, out)) < kb * 1024:
        out.append(line.format(i=i, r=(i * 2654435761) % 2**32, w=i % 17, d=i % 365))
        i += 1
    return "".join(out)[: kb * 1024]


def run(iterations: int, smoke: bool = False) -> dict[str, Any]:
    from agent_legs_testing.http_server import start_server

    iterations = min(iterations, 30) if smoke else iterations
    server, httpd = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ws = Path(tmp) / "ws"
            ws.mkdir()
            for kb in (1, 16, 64):
                (ws / f"private-{kb}.txt").write_text(_text(kb))
            policy = {
                "allow": ["files.*", "http.request"],
                "network": {"allow_hosts": ["*"], "allow_private": True},
                "require_approval": [],
            }
            on = Legs(workspace=ws, state_dir=Path(tmp) / "st-on", policy=policy)
            off = Legs(workspace=ws, state_dir=Path(tmp) / "st-off", policy={**policy, "flows": {"mode": "off"}})
            try:
                result = _measure(on, off, server, iterations)
            finally:
                on.close()
                off.close()
        result["corpus"] = _corpus(server)
    finally:
        httpd.shutdown()
        httpd.server_close()
    return result


def _measure(on: Legs, off: Legs, server: Any, iterations: int) -> dict[str, Any]:
    counter = itertools.count()
    read: dict[str, Any] = {}
    for kb in (1, 16, 64):
        # a new session per call: each read is indexed (a session's repeated read adds no new windows);
        # the guard's memo of texts read lately is emptied first, so each read is fingerprinted as a
        # first read of its text is (a text read again costs its store round trip only)
        memo = on._pipeline.flows._memo

        def first_read(kb: int = kb, memo: Any = memo) -> Any:
            memo.clear()
            return on.run("files.read", {"path": f"private-{kb}.txt"}, session=f"r{next(counter)}")

        cases = {
            "off": lambda kb=kb: off.run("files.read", {"path": f"private-{kb}.txt"}, session=f"r{next(counter)}"),
            "on": first_read,
        }
        stats = alternate(cases, iterations)
        delta = stats["on"]["p50_us"] - stats["off"]["p50_us"]
        read[f"{kb}kb"] = {**stats, "guard_us": round(delta, 1), "guard_us_per_kb": round(delta / kb, 1)}
    for legs in (on, off):
        assert legs.run("files.read", {"path": "private-64.txt"}, session="sender").ok
    sink: dict[str, Any] = {}
    for size, body in (("200b", "Thanks for the update, see you on Tuesday. " * 5), ("4kb", "The plan is fine by me. " * 170)):
        url = server.url("/collect")
        stats = alternate(
            {
                "off": lambda b=body, u=url: off.run("http.request", {"method": "POST", "url": u, "body": b}, session="sender"),
                "on": lambda b=body, u=url: on.run("http.request", {"method": "POST", "url": u, "body": b}, session="sender"),
            },
            iterations,
        )
        sink[size] = {**stats, "guard_us": round(stats["on"]["p50_us"] - stats["off"]["p50_us"], 1)}
    probe = on.run(
        "http.request", {"method": "POST", "url": server.url("/collect"), "body": _text(64)[100:160]}, session="sender"
    )
    if probe.ok or probe.error is None or "policy.flows" not in probe.output:
        return {"error": f"the guard let private data through: {probe.output[:200]}"}
    return {"read": read, "sink": sink}


def _corpus(server: Any) -> dict[str, Any]:
    """The http channel of the corpus, as test_flows_corpus.py runs it (the rates, not the timing)."""
    from agent_legs_testing.http_server import start_server

    sys.path.insert(0, str(_TESTS))
    try:
        import flows_corpus as corpus
    finally:
        sys.path.remove(str(_TESTS))
    partner, httpd = start_server()
    attacker = server
    corpus.serve_attacker_pages(attacker)
    asked: list[Any] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ws = Path(tmp) / "ws"
            corpus.write_private_store(ws)
            t = corpus.Targets(attacker.base, partner.base)
            with Legs(
                workspace=ws,
                state_dir=Path(tmp) / "st",
                policy=corpus.policy(attacker.port, partner.port),
                approver=lambda r: asked.append(r) or False,
            ) as legs:
                outcomes = [
                    corpus.run_scenario(legs, t, s, asked, lambda: sum(r.path.startswith("/collect/") for r in attacker.requests))
                    for s in corpus.scenarios()
                    if s.channel == "http"
                ]
    finally:
        httpd.shutdown()
        httpd.server_close()
    return corpus.rates(outcomes)
