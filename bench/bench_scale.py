"""How cost grows with load: 1, 4, 16, 64, 128 concurrent sessions through one ``Legs``.

Each session is an agent doing, one after the other, rounds of a mixed workload:
``files.write`` (1 KB) -> ``files.read`` -> ``http.request`` (GET 1 KB from a local aiohttp server
in its own process) -> ``code.run`` (a tiny stateful snippet in the session's Docker sandbox) ->
``browser.navigate`` (a local ~10 KB page) -> ``browser.content``. All sessions run as tasks of one
asyncio loop calling ``Legs.arun`` on one ``Legs`` (files and http run inline on that loop; code and
browser hop to the runtime thread). For each size:

* **ramp**: every session's first round together (sandbox containers start, a browser context and
  egress proxy per session open): its wall time;
* **steady**: the next rounds, timed per action: throughput (actions/s), p50/p95 per action;
* **memory** with every session open: our process's RSS, Chromium's PSS (browser + renderers), the
  Playwright driver's PSS, and the sandbox containers' cgroup memory (minus page cache); per session;
* **CPU** spent during the steady phase by each party (our process, Chromium, the driver, the
  containers, dockerd/containerd, the HTTP server): where the two cores go; and what each burns
  while all sessions sit idle for two seconds;
* **accounting**: an in-memory span exporter (``tracer_provider=``) and ``<state_dir>/actions.jsonl``:
  every action issued must have exactly one ``execute_tool`` span and one log line, matched by span
  id. The module fails if not.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import math
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _procs
from ._stats import summarize

SIZES = (1, 4, 16, 64, 128)
SMOKE_SIZES = (1, 4)
ACTIONS = ("files.write", "files.read", "http.request", "code.run", "browser.navigate", "browser.content")
CODE = "n = globals().get('n', 0) + 1\nn * 2"
NOTE = "".join(f"line {i}: a note the agent keeps\n" for i in range(32))  # ~1 KB


def _page() -> bytes:
    items = "".join(
        f"<article><h2>Item {i}</h2><p>Item {i} ships in <b>{i % 5 + 1} days</b>. <a href='/item/{i}'>Details</a>"
        f"</p><ul><li>Weight: {i * 10} g</li><li>Price: ${i}.50</li></ul></article>"
        for i in range(60)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Scale</title></head><body><main>"
        "<h1>Catalogue</h1>" + items + "</main></body></html>"
    ).encode()


def _serve(port_queue: Any) -> None:
    """The local site (1 KB for http.request, the page for the browser) in its own process."""
    from aiohttp import web

    page, body = _page(), b"x" * 1024

    async def one_kb(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    async def html(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/1kb", one_kb)
        app.router.add_get("/page", html)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


class _Recorder:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.messages: dict[str, str] = {}  # the first message of each kind of failure (why it failed)
        self.span_ids: list[str] = []
        self.issued = 0


async def _session(legs: Any, idx: int, rounds: int, base: str, rec: _Recorder) -> None:
    session = f"agent-{idx}"
    steps: list[tuple[str, dict[str, Any]]] = [
        ("files.write", {"path": f"{session}/note.txt", "content": NOTE}),
        ("files.read", {"path": f"{session}/note.txt"}),
        ("http.request", {"method": "GET", "url": f"{base}/1kb"}),
        ("code.run", {"code": CODE}),
        ("browser.navigate", {"url": f"{base}/page"}),
        ("browser.content", {}),
    ]
    for _ in range(rounds):
        for action, args in steps:
            rec.issued += 1
            t = time.perf_counter()
            r = await legs.arun(action, args, session=session)
            rec.samples[action].append(time.perf_counter() - t)
            if r.span_id:
                rec.span_ids.append(r.span_id)
            if not r.ok:
                kind = f"{action}: {r.error.type if r.error else '?'}"
                rec.errors[kind] += 1
                rec.messages.setdefault(kind, r.error.message[:300] if r.error else "")


def _containers(pid: int) -> list[str]:
    """Ids of the sandbox containers this process owns (running or pooled)."""
    import docker

    from agent_legs.actions.code._container import HOST, LABEL

    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(filters={"label": f"{LABEL}.owner={HOST}:{pid}"})]
    finally:
        client.close()


def _groups(server_pid: int) -> dict[str, list[int]]:
    pids = _procs.descendants(os.getpid())
    chromium = [p for p in pids if "chrom" in _procs.comm(p)]
    driver = [p for p in pids if _procs.comm(p).startswith("node")]
    return {
        "our process": [os.getpid()],
        "chromium": chromium,
        "playwright driver": driver,
        "http server": [server_pid],
        "dockerd + containerd": _procs.pids_named(_procs.DOCKER_DAEMONS),
    }


def _chromium_kinds() -> dict[str, list[int]]:
    """Our Chromium's processes by kind (browser, renderer, gpu-process, zygote, NetworkService...)."""
    kinds: dict[str, list[int]] = collections.defaultdict(list)
    for pid in _procs.descendants(os.getpid()):
        if "chrom" in _procs.comm(pid):
            kinds[_procs.chromium_kind(pid)].append(pid)
    return dict(kinds)


def _memory(n: int, containers: list[str], rss_before_kb: int) -> dict[str, Any]:
    pids = _procs.descendants(os.getpid())
    chromium = _procs.pss_kb([p for p in pids if "chrom" in _procs.comm(p)])
    driver = _procs.pss_kb([p for p in pids if _procs.comm(p).startswith("node")])
    ours = _procs.rss_kb() - rss_before_kb
    per_container = [m for m in (_procs.container_memory_kb(c) for c in containers) if m is not None]
    boxes = sum(per_container)
    total = ours + chromium + driver + boxes
    mb = 1024
    return {
        "our_rss_growth_mb": round(ours / mb, 1),
        "chromium_pss_mb": round(chromium / mb, 1),
        "playwright_driver_pss_mb": round(driver / mb, 1),
        "containers_mb": round(boxes / mb, 1),
        "containers_counted": len(per_container),
        "containers_running": len(containers),
        "total_mb": round(total / mb, 1),
        "per_session_mb": round(total / mb / n, 1),
    }


def _idle_cpu(server_pid: int, seconds: float = 2.0) -> dict[str, float]:
    """CPU each party burns while every session sits idle (pages open, kernels waiting), ms per second."""
    containers = _containers(os.getpid())
    before = _procs.snapshot_cpu(_groups(server_pid), containers)
    time.sleep(seconds)
    after = _procs.snapshot_cpu(_groups(server_pid), containers)
    return {k: round(v * 1000 / seconds, 1) for k, v in _procs.cpu_delta(before, after).items()}


def _size(n: int, rounds: int, base: str, port: int, server_pid: int, root: Path) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agent_legs import Legs

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    state = root / f"state-{n}"
    rss_before = _procs.rss_kb()
    legs = Legs(
        workspace=root / f"ws-{n}",
        state_dir=state,
        tracer_provider=provider,
        policy={"allow": ["files.*", "http.request", "code.*", "browser.*"], "network": {"allow_hosts": [f"127.0.0.1:{port}"]}},
    )
    out: dict[str, Any] = {"sessions": n, "rounds_per_session": rounds}
    ramp, steady = _Recorder(), _Recorder()
    try:

        async def phase(rec: _Recorder, k: int) -> float:
            t = time.perf_counter()
            await asyncio.gather(*(_session(legs, i, k, base, rec) for i in range(n)))
            return time.perf_counter() - t

        async def main() -> None:
            out["ramp_s"] = round(await phase(ramp, 1), 2)
            containers = await asyncio.to_thread(_containers, os.getpid())
            groups = _groups(server_pid)
            before = _procs.snapshot_cpu(groups, containers)
            kinds_before = _procs.snapshot_cpu(_chromium_kinds(), [])
            machine_before = _procs.machine_cpu()
            wall = await phase(steady, rounds)
            machine_after = _procs.machine_cpu()
            cpu = _procs.cpu_delta(before, _procs.snapshot_cpu(_groups(server_pid), containers))
            kinds = _procs.cpu_delta(kinds_before, _procs.snapshot_cpu(_chromium_kinds(), []))
            kinds.pop("sandbox containers", None)
            out["machine_cpu_busy"] = round(
                (machine_after[0] - machine_before[0]) / max(1e-9, machine_after[1] - machine_before[1]), 2
            )
            out["steady_s"] = round(wall, 2)
            out["throughput_actions_s"] = round(steady.issued / wall, 1)
            out["latency"] = {a: summarize(steady.samples[a]) for a in ACTIONS if steady.samples[a]}
            out["ramp_latency"] = {a: summarize(ramp.samples[a]) for a in ACTIONS if ramp.samples[a]}
            busy = sum(cpu.values())
            out["cpu_s"] = cpu
            out["cpu_busy_of_cores"] = round(busy / (wall * (os.cpu_count() or 1)), 2)
            out["cpu_ms_per_action"] = {k: round(v * 1000 / steady.issued, 2) for k, v in cpu.items()}
            # where Chromium's share goes: renderers (one per session's tab), the browser process, the GPU process...
            out["chromium_cpu_ms_per_action"] = {k: round(v * 1000 / steady.issued, 2) for k, v in sorted(kinds.items())}

        asyncio.run(main())
        out["memory"] = _memory(n, _containers(os.getpid()), rss_before)
        by_kind = _chromium_kinds()
        out["chromium_processes"] = {k: len(v) for k, v in sorted(by_kind.items())}
        out["chromium_pss_mb"] = {k: round(_procs.pss_kb(v) / 1024, 1) for k, v in sorted(by_kind.items())}
        out["idle_cpu_ms_per_s"] = _idle_cpu(server_pid)
        out["errors"] = dict(ramp.errors + steady.errors)
        out["error_messages"] = {**steady.messages, **ramp.messages}
    finally:
        t = time.perf_counter()
        legs.close()
        out["close_s"] = round(time.perf_counter() - t, 2)
    # accounting: exactly one execute_tool span and one log line per action issued, same span ids
    issued = ramp.issued + steady.issued
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool ")]
    span_ids = [f"{s.context.span_id:016x}" for s in spans]
    lines = [json.loads(x) for x in (state / "actions.jsonl").read_text().splitlines() if x.strip()]
    line_ids = [x.get("span_id") for x in lines]
    results = ramp.span_ids + steady.span_ids
    out["accounting"] = {
        "actions_issued": issued,
        "execute_tool_spans": len(spans),
        "action_log_lines": len(lines),
        "results_with_span_id": len(results),
        "child_spans": len(exporter.get_finished_spans()) - len(spans),
        "one_span_and_one_line_per_action": (
            issued == len(spans) == len(lines) == len(results)
            and len(set(span_ids)) == issued
            and set(span_ids) == set(line_ids) == set(results)
        ),
    }
    provider.shutdown()
    return out


def _bends(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Scaling efficiency (throughput gain / size gain) and marginal memory between sizes."""
    out: dict[str, Any] = {}
    for a, b in itertools.pairwise(sizes):
        key = f"{a['sessions']}->{b['sessions']}"
        gain = b["throughput_actions_s"] / a["throughput_actions_s"] if a["throughput_actions_s"] else math.nan
        out[key] = {
            "throughput_gain": round(gain, 2),
            "efficiency": round(gain / (b["sessions"] / a["sessions"]), 2),
            "marginal_mb_per_session": round(
                (b["memory"]["total_mb"] - a["memory"]["total_mb"]) / (b["sessions"] - a["sessions"]), 1
            ),
        }
    return out


def run(iterations: int, smoke: bool = False, sizes: list[int] | None = None) -> dict[str, Any]:
    sizes = list(sizes or (SMOKE_SIZES if smoke else SIZES))
    total_rounds = max(4, iterations // 5)  # the rounds of all sessions together, at each size
    min_rounds = 2  # at 64 sessions a round takes about a minute on 2 cores (Chromium is the bottleneck)
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(queue,), daemon=True)
    proc.start()
    port = queue.get(timeout=30)
    base = f"http://127.0.0.1:{port}"
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                rounds = max(min_rounds, total_rounds // n)
                print(f"bench: scale {n} sessions: 1 ramp round + {rounds} timed rounds each ...", flush=True)
                results.append(_size(n, rounds, base, port, proc.pid or 0, Path(tmp)))
    finally:
        proc.kill()
    bad = [r["sessions"] for r in results if not r["accounting"]["one_span_and_one_line_per_action"]]
    out = {
        "sizes": results,
        "bends": _bends(results),
        "workload": list(ACTIONS),
        "memory_counts": "our process's RSS growth since the Legs was built + Chromium PSS (browser, GPU, "
        "renderers) + Playwright driver PSS + sandbox containers' cgroup memory minus inactive "
        "page cache; the HTTP server and the Docker daemon are not counted",
        "cpu_counts": "user+system CPU seconds during the steady phase, from /proc and the containers' cgroups; "
        "dockerd + containerd are machine-wide (other Docker work on the machine counts too); "
        "'CPU busy' is what the parties counted used, as a share of all cores; 'machine busy' is the "
        "whole machine's (other work included), from /proc/stat",
    }
    if bad:
        raise AssertionError(f"span/log accounting differs at {bad} sessions: " + json.dumps([r["accounting"] for r in results]))
    # with one session nothing competes: an action failing there is a broken backend, not load
    first = results[0]
    broken = [e for e in first["errors"] if e.split(":")[0] in ACTIONS] if first["sessions"] == 1 else []
    if broken:
        raise AssertionError(f"actions failed with {first['sessions']} session(s), without load: {first['errors']}")
    return out
