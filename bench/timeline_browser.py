"""A timestamped protocol timeline of one ``browser.click`` + ``browser.content`` cycle against raw Playwright's
(``expect_navigation(wait_until="load")`` + ``click`` + ``inner_text``), phase by phase, with our process's CPU.

``python -m bench.timeline_browser [CYCLES]``: one process, one ``Legs``, the 50 KB twin pages of
``bench_browser``; ours and raw alternate cycle by cycle. Playwright's client ``Connection`` is patched to
stamp every message: sent (``send_message_to_server``), arrived (read off the driver's pipe) and dispatched
(handed to the client's objects), each with ``time.process_time()`` (all our threads: the runtime's loop, the
egress proxy, the caller's loop). The egress proxy's ``_forward`` is stamped too. Per cycle the phases are the
first matching message after the click was sent; printed: the p50 over the cycles of each phase's start (ms
after the cycle began) and of our process's CPU spent up to it. Not part of ``python -m bench``: a diagnostic,
it changes nothing the bench's rows measure (the patches live only in this process).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agent_legs import Legs

from ._served import served_legs
from .bench_browser import _serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOG: list[tuple[float, float, str, str, str]] = []  # (wall, cpu, kind, what, detail)


def _stamp(kind: str, what: str, detail: str = "") -> None:
    LOG.append((time.perf_counter(), time.process_time(), kind, what, detail))


def _patch() -> None:
    from playwright._impl import connection, transport

    from agent_legs import _egress_proxy

    send, dispatch = connection.Connection.send_message_to_server, connection.Connection.dispatch
    deser = transport.Transport.deserialize_message
    methods: dict[int, str] = {}

    def send_message_to_server(self: Any, obj: Any, method: str, params: Any, options: Any) -> Any:
        _stamp("send", method, obj._type)
        fut = send(self, obj, method, params, options)
        if method != "__waitInfo__":
            methods[max(self._callbacks)] = method
        return fut

    def deserialize_message(self: Any, data: Any) -> Any:
        msg = deser(self, data)
        if isinstance(msg, dict):
            msg["__arrived"] = (time.perf_counter(), time.process_time())
        return msg

    def describe(msg: dict[str, Any]) -> tuple[str, str, str]:
        if msg.get("id"):
            return "reply", methods.pop(msg["id"], "?"), ""
        method, params = msg.get("method") or "", msg.get("params") or {}
        if method == "__create__":
            init = params.get("initializer") or {}
            nav = "nav" if init.get("isNavigationRequest") else ""
            return "event", f"create:{params.get('type')}", f"{nav} {init.get('url', '')}".strip()
        if method == "loadstate":
            return "event", "loadstate", str(params.get("add") or "")
        if method == "navigated":
            return "event", "navigated", str(params.get("url") or "")
        return "event", method, ""

    def dispatch_(self: Any, msg: dict[str, Any]) -> None:
        arrived = msg.pop("__arrived", None)
        kind, what, detail = describe(msg)
        if arrived is not None:
            LOG.append((arrived[0], arrived[1], "arrive-" + kind, what, detail))
        _stamp(kind, what, detail)
        dispatch(self, msg)

    forward = _egress_proxy.EgressProxy._forward

    async def forward_(self: Any, *args: Any) -> bool:
        _stamp("proxy", "forward-start", str(args[4]))
        try:
            return bool(await forward(self, *args))
        finally:
            _stamp("proxy", "forward-end", str(args[4]))

    connection.Connection.send_message_to_server = send_message_to_server  # type: ignore[method-assign]
    connection.Connection.dispatch = dispatch_  # type: ignore[method-assign]
    transport.Transport.deserialize_message = deserialize_message  # type: ignore[method-assign]
    _egress_proxy.EgressProxy._forward = forward_  # type: ignore[method-assign]


# Our reads: ``Runtime.evaluate`` through the tab's CDP session, whose protocol method is ``send`` (round 10;
# ``evaluateExpression`` before).
OUR_READ = "send"
# (label, kind, what, detail predicate): the first match after the previous phase
OURS = [
    ("click sent", "send", "click", None),
    ("nav request arrives", "arrive-event", "create:Request", "nav"),
    ("proxy forward start", "proxy", "forward-start", None),
    ("proxy forward end", "proxy", "forward-end", None),
    ("response arrives", "arrive-event", "create:Response", None),
    ("commit (navigated) arrives", "arrive-event", "navigated", None),
    ("click reply arrives", "arrive-reply", "click", None),
    ("domcontentloaded arrives", "arrive-event", "loadstate", "domcontentloaded"),
    ("load arrives", "arrive-event", "loadstate", "load"),
    ("read sent", "send", OUR_READ, None),
    ("read reply arrives", "arrive-reply", OUR_READ, None, "read sent"),
    ("read reply dispatched", "reply", OUR_READ, None, "read sent"),
    ("warm-up sent", "send", "queryCount", None, "read reply dispatched"),
    ("click returned", "mark", "click-returned", None, "read reply dispatched"),
    ("content read sent", "send", OUR_READ, None, "click returned"),
    ("content reply arrives", "arrive-reply", OUR_READ, None, "content read sent"),
    ("content returned", "mark", "content-returned", None),
]
READ_METHOD = "innerText"
RAW = [
    ("click sent", "send", "click", None),
    ("nav request arrives", "arrive-event", "create:Request", "nav"),
    ("response arrives", "arrive-event", "create:Response", None),
    ("commit (navigated) arrives", "arrive-event", "navigated", None),
    ("click reply arrives", "arrive-reply", "click", None),
    ("domcontentloaded arrives", "arrive-event", "loadstate", "domcontentloaded"),
    ("load arrives", "arrive-event", "loadstate", "load"),
    ("read sent", "send", READ_METHOD, None),
    ("read reply arrives", "arrive-reply", READ_METHOD, None, "read sent"),
    ("returned", "mark", "raw-returned", None),
]


def _phases(log: list[tuple[float, float, str, str, str]], spec: list[Any]) -> dict[str, tuple[float, float]] | None:
    """Each phase: the first matching entry after the phase its spec names (else after the click was sent)."""
    t0, c0 = log[0][0], log[0][1]
    out: dict[str, tuple[float, float]] = {}
    at: dict[str, int] = {}
    for label, kind, what, detail, *after in spec:
        i = at[after[0]] + 1 if after else at.get("click sent", -1) + 1
        while i < len(log) and not (log[i][2] == kind and log[i][3] == what and (detail is None or log[i][4].startswith(detail))):
            i += 1
        if i == len(log):
            return None
        at[label] = i
        out[label] = ((log[i][0] - t0) * 1000, (log[i][1] - c0) * 1000)
    return out


def _tree_cpu_ms(root: int) -> dict[str, float]:
    """CPU (user + system, ms) of the driver ``root`` and every process under it, by kind (driver, browser,
    renderer, gpu-process, NetworkService...)."""
    from ._procs import chromium_kind, comm, descendants

    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in [root, *descendants(root)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = "driver" if pid == root else (chromium_kind(pid) if "chrom" in comm(pid) else comm(pid))
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) * 1000 / tick
    return out


def _drivers() -> list[int]:
    from ._procs import comm, descendants

    return [pid for pid in descendants(os.getpid()) if comm(pid).startswith("node")]


def _raw_spec(method: str) -> list[Any]:
    return [(*row[:2], method, *row[3:]) if row[0].startswith("read") else row for row in RAW]


async def _cycles(legs: Legs, url: str, cycles: int, modes: list[str]) -> None:
    from playwright.async_api import async_playwright

    from agent_legs._egress_proxy import EgressProxy
    from agent_legs.actions.browser._launcher import CHROMIUM_ARGS
    from agent_legs.actions.browser._page import _READ_JS

    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    assert (await legs.arun("browser.navigate", {"url": url})).ok
    ours_driver = _drivers()
    async with async_playwright() as pw:
        raw_driver = [p for p in _drivers() if p not in ours_driver]
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        proxy = await EgressProxy(legs._runtime.egress, peer_uid=os.getuid()).start()
        pages = {
            "raw": await (await browser.new_context()).new_page(),
            "raw_ourread": await (await browser.new_context()).new_page(),
            "raw_ctx": await (await browser.new_context(service_workers="block", accept_downloads=True)).new_page(),
            "raw_proxy": await (await browser.new_context(proxy={"server": proxy.url, "bypass": "<-loopback>"})).new_page(),
            "raw_proxy_ctx": await (
                await browser.new_context(
                    proxy={"server": proxy.url, "bypass": "<-loopback>"}, service_workers="block", accept_downloads=True
                )
            ).new_page(),
        }
        for page in pages.values():
            await page.goto(url)
        assert (await legs.arun("browser.navigate", {"url": url})).ok

        async def ours() -> None:
            r = await legs.arun("browser.click", {"selector": "#next"})
            _stamp("mark", "click-returned")
            c = await legs.arun("browser.content", {})
            _stamp("mark", "content-returned")
            assert r.ok and c.ok and "Catalogue" in c.output, (r.output, c.output)

        def raw(name: str) -> Any:
            page = pages[name]

            async def run() -> None:
                async with page.expect_navigation(wait_until="load"):
                    await page.click("#next")
                if name == "raw_ourread":
                    assert "Catalogue" in (await page.evaluate(_READ_JS, [None, "markdown", None, "k"]))["html"]
                else:
                    assert "Catalogue" in await page.inner_text("body")
                _stamp("mark", "raw-returned")

            return run

        cases = {
            name: (ours, OURS)
            if name == "ours"
            else (raw(name), _raw_spec("evaluateExpression" if name == "raw_ourread" else "innerText"))
            for name in modes
        }
        for _ in range(3):
            for fn, _spec in cases.values():
                await fn()
        got: dict[str, list[dict[str, tuple[float, float]]]] = {k: [] for k in cases}
        trees: dict[str, list[dict[str, float]]] = {k: [] for k in cases}
        assert len(ours_driver) == 1 and len(raw_driver) == 1, (ours_driver, raw_driver)
        wall: dict[str, list[float]] = {k: [] for k in cases}
        load0 = os.getloadavg()[0]
        start = time.strftime("%H:%M:%S", time.gmtime())
        names = list(cases)
        for i in range(cycles):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                fn, spec = cases[name]
                root = ours_driver[0] if name == "ours" else raw_driver[0]
                before = _tree_cpu_ms(root)
                LOG.clear()
                _stamp("mark", "start")
                t = time.perf_counter()
                await fn()
                wall[name].append((time.perf_counter() - t) * 1000)
                await asyncio.sleep(0.02)  # (a warm-up still running belongs to this cycle)
                after = _tree_cpu_ms(root)
                trees[name].append({k: v - before.get(k, 0.0) for k, v in after.items()})
                found = _phases(sorted(LOG), spec)
                if found is not None:
                    got[name].append(found)
        med = statistics.median
        print(
            f"{cycles} cycles each, {start}-{time.strftime('%H:%M:%S', time.gmtime())} UTC, "
            f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
        )
        for name, (_fn, spec) in cases.items():
            rows = got[name]
            print(
                f"{name}: wall p50 {med(wall[name]):.1f} ms; {len(rows)} complete cycles: phase, p50 since start, step, our CPU"
            )
            prev: str | None = None
            for label, *_ in spec:
                w = med(r[label][0] for r in rows)
                step = med(r[label][0] - (r[prev][0] if prev else 0.0) for r in rows)
                cpu = med(r[label][1] - (r[prev][1] if prev else 0.0) for r in rows)
                print(f"  {label:28s} {w:7.1f}  step {step:6.1f}  our cpu in step {cpu:5.1f}")
                prev = label
            print(f"  our process CPU per cycle p50 {med(r[spec[-1][0]][1] for r in rows):.1f} ms")
            last = spec[-1][0]
            spans = [
                ("click sent -> nav request", "click sent", "nav request arrives"),
                ("click sent -> commit", "click sent", "commit (navigated) arrives"),
                ("commit -> load", "commit (navigated) arrives", "load arrives"),
                ("load -> read sent", "load arrives", "read sent"),
                ("read sent -> reply", "read sent", "read reply arrives"),
                ("read reply -> returned", "read reply arrives", last),
            ]
            print(
                "  intervals, p50 per cycle (wall / our CPU): "
                + "; ".join(
                    f"{label} {med(r[b][0] - r[a][0] for r in rows):.1f} / {med(r[b][1] - r[a][1] for r in rows):.1f}"
                    for label, a, b in spans
                )
            )
            kinds = sorted({k for t in trees[name] for k in t})
            per = {k: statistics.fmean(t.get(k, 0.0) for t in trees[name]) for k in kinds}
            print(
                "  driver + Chromium CPU per cycle (mean, ms; the raw browser also holds the other raw cases' tabs): "
                + ", ".join(f"{k} {v:.1f}" for k, v in per.items())
                + f"; total {sum(per.values()):.1f}"
            )
        await proxy.aclose()
        await browser.close()


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    from agent_legs.actions.browser import _actions

    if os.environ.get("WARM") == "0":  # the click as before ``_warm``: no install after its read
        _actions.warm_selectors = lambda s: None
    modes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["ours", "raw"]
    _patch()
    with served_legs(_serve) as (legs, (port, _)):
        asyncio.run(_cycles(legs, f"http://127.0.0.1:{port}/page", cycles, modes))


if __name__ == "__main__":
    main()
