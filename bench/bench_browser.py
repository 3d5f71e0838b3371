"""browser.* on a local 50 KB page against raw Playwright and the peers' tools.

Same run, same Chromium build and flags, alternating rounds; three scenarios, each peer made to do the
same work as Agent Legs (what a caller needs to read the right page), so the ratios compare like with like:

* **navigate + read** (``navigate_plus_content``): ``agent_legs`` = ``browser.navigate`` then ``browser.content``
  through ``Legs.arun`` (policy, the session's egress proxy in front of every request, spans,
  action log, markdown with form fields); ``raw_playwright`` = ``page.goto`` + ``page.inner_text("body")`` on a
  plain context (no proxy, no policy); ``langchain`` = ``PlayWrightBrowserToolkit``'s ``navigate_browser`` +
  ``extract_text``; ``llama_index`` = llama-index-tools-playwright's ``navigate_to`` + ``extract_text``.
* **click + read** (``click_plus_content``): a link to the twin 50 KB page (``/page`` and ``/page2`` link to each
  other; every case checks it arrived on the other one). ``browser.click`` waits until the navigation the click
  started has committed and the new page has loaded, then ``browser.content`` reads it. Raw Playwright does the
  same wait: ``page.expect_navigation(wait_until="load")`` around ``page.click``, then ``inner_text``. (Before
  2026-12-03 the raw case was ``click`` + ``wait_for_load_state("load")``, which returns at once while the old
  page is still shown: it could read the page it left, and its wait was not ours.) The peers' click tools
  (``click_element`` / ``click``) do not wait for the new page: they get the same ``expect_navigation`` around
  them, then their ``extract_text``. LangChain's ``click_element`` runs with ``visible_only=False``: its default
  narrowing (``>> visible=1``) matches nothing under Playwright 1.65, so it clicked nothing and reported "Unable
  to click" after its 1 s timeout (earlier runs' 1.07 s for LangChain was that failure, reading the old page).
  Both peers' click timeouts are raised from 1 s to our element timeout (5 s).
* **repeat visit** (``gallery_repeat_visit``): navigating again to a page with 40 cacheable images, caches warm.
  ``browser.navigate`` returns the page read back as markdown, so each peer navigates and reads the page's
  text too (``raw_playwright`` = ``goto`` + ``inner_text``; the peers' navigate + ``extract_text``);
  ``raw_playwright_goto_only`` (``goto`` alone, what the row measured before 2026-12-03) is kept beside them.
  The browser's HTTP cache must work through our proxy: a proxy credential would make Playwright disable it
  (see ``_egress_proxy``), refetching every image on every visit.

Also reported: whether each one lets a page reach another port on 127.0.0.1 (a probe page with an image
from a second server), and memory per session (Chromium PSS + our process RSS, per open session).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from agent_legs import Legs

from ._procs import comm, descendants, pss_kb, rss_kb
from ._served import served_legs
from ._stats import ratio, summarize

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SESSIONS_FOR_MEMORY = 8


def _page_50kb(nxt: str = "/page2") -> bytes:
    items = "".join(
        f"<article><h2>Product {i}</h2><p>Product {i} is a durable item with a <b>two-year warranty</b>, made from "
        f"recycled materials and tested in the field. <a href='/product/{i}'>Details</a> · "
        f"<a href='/reviews/{i}'>Reviews</a></p><ul><li>Weight: {i * 10} g</li><li>Colour: slate</li></ul>"
        f"<table><tr><th>Size</th><th>Price</th></tr><tr><td>S</td><td>${i}.00</td></tr>"
        f"<tr><td>L</td><td>${i + 3}.50</td></tr></table></article>"
        for i in range(124)
    )
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Catalogue</title><style>body{font:14px sans-serif}"
        "article{margin:1em 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
        "</head><body><header><nav><a href='/'>Home</a> <a href='/catalogue'>Catalogue</a> <a href='/about'>About</a>"
        "</nav></header><main><h1>Catalogue</h1><form action='/search'><label for='q'>Search</label>"
        f"<input id='q' name='q'><button>Go</button></form><p><a id='next' href='{nxt}'>Next page</a></p>"
        + items
        + "</main><footer>© Shop</footer></body></html>"
    )
    return html.encode()


GALLERY_IMAGES = 40
_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def _gallery() -> bytes:
    """A page with 40 cacheable images: a repeat visit is as fast as the browser's HTTP cache lets it be."""
    imgs = "".join(f"<img src='/img/{i}.png' alt='item {i}'>" for i in range(GALLERY_IMAGES))
    return f"<html><head><title>Gallery</title></head><body><h1>Gallery</h1>{imgs}</body></html>".encode()


def _serve(port_queue: Any) -> None:
    """The site (and a second 'other port' server that counts probe hits) in their own process."""
    from aiohttp import web

    pages = {"/page": _page_50kb("/page2"), "/page2": _page_50kb("/page"), "/gallery": _gallery()}
    hits: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=pages[request.path], content_type="text/html", charset="utf-8")

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=_PNG, content_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def probe(request: web.Request) -> web.Response:
        tool = request.query.get("tool", "?")
        return web.Response(
            text=f"<h1>probe</h1><img src='http://127.0.0.1:{other_port}/pixel?tool={tool}'>", content_type="text/html"
        )

    async def pixel(request: web.Request) -> web.Response:
        tool = request.query.get("tool", "?")
        hits[tool] = hits.get(tool, 0) + 1
        return web.Response(body=b"GIF89a", content_type="image/gif")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(hits)

    async def main() -> None:
        nonlocal other_port
        other = web.Application()
        other.router.add_get("/pixel", pixel)
        other.router.add_get("/hits", count)
        other_runner = web.AppRunner(other, access_log=None)
        await other_runner.setup()
        other_site = web.TCPSite(other_runner, "127.0.0.1", 0)
        await other_site.start()
        other_port = other_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        app = web.Application()
        app.router.add_get("/page", handle)
        app.router.add_get("/page2", handle)
        app.router.add_get("/gallery", handle)
        app.router.add_get("/img/{n}.png", image)
        app.router.add_get("/probe", probe)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put((site._server.sockets[0].getsockname()[1], other_port))  # type: ignore[union-attr]
        await asyncio.Event().wait()

    other_port = 0
    asyncio.run(main())


def _chromium_pids() -> list[int]:
    return [pid for pid in descendants(os.getpid()) if "chrom" in comm(pid)]


async def _alternate(
    cases: dict[str, Callable[[], Awaitable[Any]]], iterations: int, rounds: int = 5, warmup: int = 5
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # warm: browsers launched, contexts open, caches hot
        for _ in range(warmup):
            await fn()
    per_round = max(1, iterations // rounds)
    for _ in range(rounds):
        for name, fn in cases.items():
            for _ in range(per_round):
                t = time.perf_counter()
                await fn()
                samples[name].append(time.perf_counter() - t)
    return {k: summarize(v) for k, v in samples.items()}


async def _bench(legs: Legs, url: str, probe: str, iterations: int, smoke: bool) -> dict[str, Any]:
    from langchain_community.agent_toolkits import PlayWrightBrowserToolkit
    from langchain_community.tools.playwright.utils import aget_current_page
    from llama_index.tools.playwright import PlaywrightToolSpec
    from playwright.async_api import async_playwright

    from agent_legs.actions.browser._launcher import CHROMIUM_ARGS

    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    warmup, rounds = (1, 2) if smoke else (5, 5)
    async with async_playwright() as pw:
        # each peer gets its own browser, launched the same way as ours
        raw_browser, lc_browser, li_browser = [
            await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args) for _ in range(3)
        ]
        raw_page = await (await raw_browser.new_context()).new_page()
        tools = {t.name: t for t in PlayWrightBrowserToolkit.from_browser(async_browser=lc_browser).get_tools()}
        lc_nav, lc_text, lc_click = tools["navigate_browser"], tools["extract_text"], tools["click_element"]
        li = PlaywrightToolSpec.from_async_browser(li_browser)
        # The peers' click tools give up after 1 s (then report "Unable to click" and click nothing): under load
        # that is a click not made, not a faster one. They get the element timeout our click has (5 s).
        lc_click.playwright_timeout = li.playwright_timeout = 5_000
        # LangChain's click_element narrows the selector with ``>> visible=1``, which matches nothing under
        # Playwright 1.65: it clicked nothing and said "Unable to click" after its timeout (the 1.07 s of earlier
        # runs). Without the narrowing it clicks the element.
        lc_click.visible_only = False
        sizes: dict[str, int] = {}

        async def agent_legs() -> None:
            r = await legs.arun("browser.navigate", {"url": url})
            c = await legs.arun("browser.content", {})
            assert r.ok and c.ok, (r.output, c.output)
            sizes["agent_legs"] = len(c.output)

        async def raw() -> None:
            await raw_page.goto(url)
            sizes["raw_playwright"] = len(await raw_page.inner_text("body"))

        async def langchain() -> None:
            await lc_nav.arun({"url": url})
            sizes["langchain"] = len(await lc_text.arun({}))

        async def llama_index() -> None:
            await li.navigate_to(url)
            sizes["llama_index"] = len(await li.extract_text())

        cases = {"agent_legs": agent_legs, "raw_playwright": raw, "langchain": langchain, "llama_index": llama_index}
        navigate = await _alternate(cases, iterations, rounds, warmup)

        def other(page_url: str) -> str:  # /page and /page2 link to each other
            return "/page" if page_url.endswith("/page2") else "/page2"

        at = {"agent_legs": url}  # where our session is (the navigate scenario left it on /page)

        async def agent_legs_click() -> None:
            r = await legs.arun("browser.click", {"selector": "#next"})
            c = await legs.arun("browser.content", {})
            assert r.ok and c.ok and "Catalogue" in c.output, (r.output, c.output)
            assert c.data["url"].endswith(other(at["agent_legs"])), (at, c.data["url"])
            at["agent_legs"] = c.data["url"]

        async def raw_click() -> None:
            expected = other(raw_page.url)
            async with raw_page.expect_navigation(wait_until="load"):  # what browser.click waits for
                await raw_page.click("#next")
            assert "Catalogue" in await raw_page.inner_text("body") and raw_page.url.endswith(expected)

        async def langchain_click() -> None:
            page = await aget_current_page(lc_browser)
            expected = other(page.url)
            async with page.expect_navigation(wait_until="load"):
                said = await lc_click.arun({"selector": "#next"})
            assert "Unable" not in said, said
            assert "Catalogue" in await lc_text.arun({}) and page.url.endswith(expected)

        async def llama_index_click() -> None:
            page = await li._aget_current_page(li_browser)
            expected = other(page.url)
            async with page.expect_navigation(wait_until="load"):
                said = await li.click("#next")
            assert "Unable" not in said, said
            assert "Catalogue" in await li.extract_text() and page.url.endswith(expected)

        clicks = {
            "agent_legs": agent_legs_click,
            "raw_playwright": raw_click,
            "langchain": langchain_click,
            "llama_index": llama_index_click,
        }
        click = await _alternate(clicks, iterations, rounds, warmup)

        # repeat visits to a page with 40 cacheable images (the warm-up visits fill the caches)
        gallery_url = url.replace("/page", "/gallery")

        async def agent_legs_gallery() -> None:
            r = await legs.arun("browser.navigate", {"url": gallery_url})
            assert r.ok and "Gallery" in r.output, r.output

        async def raw_gallery() -> None:  # browser.navigate returns the page: read it too
            await raw_page.goto(gallery_url)
            assert "Gallery" in await raw_page.inner_text("body")

        async def raw_gallery_goto_only() -> None:
            await raw_page.goto(gallery_url)

        async def langchain_gallery() -> None:
            await lc_nav.arun({"url": gallery_url})
            assert "Gallery" in await lc_text.arun({})

        async def llama_index_gallery() -> None:
            await li.navigate_to(gallery_url)
            assert "Gallery" in await li.extract_text()

        galleries = {
            "agent_legs": agent_legs_gallery,
            "raw_playwright": raw_gallery,
            "raw_playwright_goto_only": raw_gallery_goto_only,
            "langchain": langchain_gallery,
            "llama_index": llama_index_gallery,
        }
        gallery = await _alternate(galleries, iterations, rounds, warmup)

        # does a page reach another port on 127.0.0.1?
        await legs.arun("browser.navigate", {"url": f"{probe}?tool=agent_legs"})
        await raw_page.goto(f"{probe}?tool=raw_playwright")
        await lc_nav.arun({"url": f"{probe}?tool=langchain"})
        await li.navigate_to(f"{probe}?tool=llama_index")
        for b in (raw_browser, lc_browser, li_browser):
            await b.close()
    return {"timings": navigate, "click": click, "gallery": gallery, "output_chars": sizes}


async def _memory(legs: Legs, url: str, sessions: int) -> dict[str, Any]:
    """Chromium PSS and our RSS added per open session (each with its context, tab and egress proxy)."""
    await legs.arun("browser.navigate", {"url": url}, session="mem-0")
    await asyncio.sleep(0.5)
    chromium0, rss0 = pss_kb(_chromium_pids()), rss_kb()
    for i in range(1, sessions + 1):
        r = await legs.arun("browser.navigate", {"url": url}, session=f"mem-{i}")
        assert r.ok, r.output
    await asyncio.sleep(0.5)
    chromium1, rss1 = pss_kb(_chromium_pids()), rss_kb()
    n = sessions
    return {
        "sessions": n,
        "chromium_pss_mb_per_session": round((chromium1 - chromium0) / n / 1024, 1),
        "python_rss_mb_per_session": round((rss1 - rss0) / n / 1024, 2),
        "chromium_pss_mb_total": round(chromium1 / 1024, 1),
    }


def run(iterations: int, smoke: bool = False) -> dict[str, Any]:
    smoke = smoke or iterations <= 20
    # a page load is ~10^4 times a files.read: cap the run (a smoke run only checks the harness)
    iterations = 6 if smoke else max(10, min(iterations, 120))
    with served_legs(_serve) as (legs, (port, other_port)):
        url, probe = f"http://127.0.0.1:{port}/page", f"http://127.0.0.1:{port}/probe"

        async def main() -> dict[str, Any]:
            out = await _bench(legs, url, probe, iterations, smoke)
            out["memory"] = await _memory(legs, url, 3 if smoke else SESSIONS_FOR_MEMORY)
            return out

        out = asyncio.run(main())
        with urllib.request.urlopen(f"http://127.0.0.1:{other_port}/hits", timeout=5) as resp:
            hits = json.loads(resp.read())
    t, c = out["timings"], out["click"]
    ours, ours_c = t["agent_legs"], c["agent_legs"]
    return {
        "page_bytes": len(_page_50kb()),
        "iterations": iterations,
        "navigate_plus_content": t,
        "ratio_p50_vs_raw_playwright": ratio(ours, t["raw_playwright"]),
        "ratio_p50_vs_langchain": ratio(ours, t["langchain"]),
        "ratio_p50_vs_llama_index": ratio(ours, t["llama_index"]),
        "click_plus_content": c,
        "click_ratio_p50_vs_raw_playwright": ratio(ours_c, c["raw_playwright"]),
        "click_ratio_p50_vs_langchain": ratio(ours_c, c["langchain"]),
        "click_ratio_p50_vs_llama_index": ratio(ours_c, c["llama_index"]),
        "target": "agent_legs <= 1.1x raw Playwright and no slower than either peer, every request policed",
        "output_chars": out["output_chars"],
        "reaches_other_loopback_port": {
            tool: hits.get(tool, 0) > 0 for tool in ("agent_legs", "raw_playwright", "langchain", "llama_index")
        },
        "memory": out["memory"],
        "p50_ms": {k: round(v["p50_us"] / 1000, 2) for k, v in t.items()},
        "p95_ms": {k: round(v["p95_us"] / 1000, 2) for k, v in t.items()},
        "click_p50_ms": {k: round(v["p50_us"] / 1000, 2) for k, v in c.items()},
        "gallery_repeat_visit": out["gallery"],
        "gallery_images": GALLERY_IMAGES,
        "gallery_ratio_p50_vs_raw_playwright": ratio(out["gallery"]["agent_legs"], out["gallery"]["raw_playwright"]),
        "gallery_ratio_p50_vs_raw_playwright_goto_only": ratio(
            out["gallery"]["agent_legs"], out["gallery"]["raw_playwright_goto_only"]
        ),
        "click_and_gallery_target": "agent_legs <= 1.05x raw Playwright doing the same wait and the same read",
        "click_p95_ms": {k: round(v["p95_us"] / 1000, 2) for k, v in c.items()},
    }
