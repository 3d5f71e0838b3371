"""In-process A/B of ``browser.click`` + ``browser.content`` with and without the selector engine's install
after a navigating click's read (``actions/browser/_warm``), beside raw Playwright doing the same wait and read.

``python -m bench.ab_browser [ROUNDS]``: one process, one ``Legs``, the 50 KB twin pages of
``bench_browser``; ``THINK_S=0.5`` waits that long before each timed cycle in every case (a model's turn
between the last answer and the click; 0 by default: back to back, as ``bench_browser`` runs). Each round
runs three cases in an order rotated every round: ``warm`` (this tree's
click), ``cold`` (the same click with the warm-up replaced by nothing: what the code did before) and
``raw`` (``expect_navigation(wait_until="load")`` around ``page.click``, then ``inner_text``). The warm-up
helps the *next* click, so each of our cases runs two cycles and times the second. What is printed: each
case's p50 wall time, our process's CPU per cycle, and the median of the round's neighbour differences
(cold minus warm: positive is a saving; each against raw). Load that comes and goes hits all three alike,
which whole-run comparisons on a shared 2-core machine do not give. ``AB=turn`` compares instead the
read with and without its turn of the loop between the warm-up's start and the conversion (round 9: the
warm-up's message sent before the conversion rather than after it; both cases warm up). ``AB=world`` compares
our reads as ``Runtime.evaluate`` on the tab's CDP session (``warm``: this tree, ``_main_world``) with the same
reads through ``page.evaluate`` (``cold``: before round 10, Playwright's utility script installed in each
document's world by its first evaluation); both cases warm up. ``CYCLE=navigate`` times ``browser.navigate`` +
``browser.content`` to the other twin page instead (raw: ``goto`` + ``inner_text``). Not part of
``python -m bench``: it measures a change, not the product.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent_legs import Legs
from agent_legs.actions.browser import _actions, _page

from ._served import served_legs
from .bench_browser import _serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _cpu_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


def _no_warm_up(s: Any) -> None:
    """What the click did before ``_warm``: nothing after its read."""


async def _playwright_evaluate(s: Any, function: str, *args: Any) -> Any:
    """A read as before round 10: ``page.evaluate``, which installs Playwright's utility script in the document."""
    return await s.page.evaluate(function, *args)


class _NoTurn:
    """``asyncio`` as ``_page`` sees it, its ``sleep`` not yielding: the read before round 9 (the warm-up's
    message sent only once the conversion was done)."""

    @staticmethod
    async def sleep(_: float) -> None:
        return None


async def _rounds(legs: Legs, url: str, rounds: int) -> None:
    from playwright.async_api import async_playwright

    from agent_legs.actions.browser._launcher import CHROMIUM_ARGS

    warm_up = _actions.warm_selectors
    main_world = _page.evaluate
    turn = os.environ.get("AB") == "turn"
    world = os.environ.get("AB") == "world"
    navigating = os.environ.get("CYCLE") == "navigate"
    think_s = float(os.environ.get("THINK_S", "0"))
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        assert (await legs.arun("browser.navigate", {"url": url})).ok

        twins = [url, url + "2"]  # /page and /page2

        async def ours() -> None:
            if navigating:
                twins.reverse()
                r = await legs.arun("browser.navigate", {"url": twins[0]})
            else:
                r = await legs.arun("browser.click", {"selector": "#next"})
            c = await legs.arun("browser.content", {})
            assert r.ok and c.ok and "Catalogue" in c.output, (r.output, c.output)

        def case(warm: bool) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                if turn:
                    _page.asyncio = asyncio if warm else _NoTurn  # type: ignore[assignment]
                elif world:
                    _page.evaluate = main_world if warm else _playwright_evaluate  # type: ignore[assignment]
                else:
                    _actions.warm_selectors = warm_up if warm else _no_warm_up  # type: ignore[assignment]
                await ours()  # (the warm-up, or its absence, helps the next click: that one is timed)

            return run

        async def raw() -> None:
            if navigating:
                twins.reverse()
                await page.goto(twins[0])
            else:
                async with page.expect_navigation(wait_until="load"):
                    await page.click("#next")
            assert "Catalogue" in await page.inner_text("body")

        cases = {"warm": case(True), "cold": case(False), "raw": raw}
        for _ in range(3):  # warm: both browsers' caches, both modes of ours
            for fn in cases.values():
                await fn()
        wall: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        names = list(cases)
        for i in range(rounds):
            for name in names[i % 3 :] + names[: i % 3]:
                fn = cases[name]
                if fn is not raw:
                    await fn()  # sets the mode; the timed cycle follows a click of the same mode
                    timed = ours
                else:
                    timed = raw
                await asyncio.sleep(think_s)  # the model's turn between the last answer and this click
                t, c = time.perf_counter(), _cpu_ms()
                await timed()
                wall[name].append((time.perf_counter() - t) * 1000)
                cpu[name].append(_cpu_ms() - c)
        _actions.warm_selectors = warm_up  # type: ignore[assignment]
        _page.asyncio = asyncio  # type: ignore[assignment]
        _page.evaluate = main_world  # type: ignore[assignment]
        med = statistics.median
        what = " (AB=turn: warm = with the turn, cold = without)" if turn else ""
        what = " (AB=world: warm = CDP reads, cold = page.evaluate reads)" if world else what
        what += ", navigate + content" if navigating else ", click + content"
        print(
            f"{rounds} rounds{what}, think {think_s:g} s, load average {os.getloadavg()[0]:.1f} at the end, "
            f"{time.strftime('%H:%M:%S', time.gmtime())} UTC"
        )
        for k in cases:
            print(f"  {k:5s} p50 {med(wall[k]):7.1f} ms  our CPU {med(cpu[k]):5.1f} ms  mean {statistics.fmean(wall[k]):7.1f}")
        for a, b in (("cold", "warm"), ("warm", "raw"), ("cold", "raw")):
            d = [x - y for x, y in zip(wall[a], wall[b], strict=True)]
            print(f"  {a} - {b}: median of neighbour differences {med(d):+.1f} ms")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with served_legs(_serve) as (legs, (port, _)):
        print(f"load average {os.getloadavg()[0]:.1f} at the start, {time.strftime('%H:%M:%S', time.gmtime())} UTC")
        asyncio.run(_rounds(legs, f"http://127.0.0.1:{port}/page", rounds))


if __name__ == "__main__":
    main()
