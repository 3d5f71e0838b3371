"""Many sessions on one browser: admission to the load slots and the process model Chromium runs with.

Admission (issue 19, item 4): a call's queue wait for a load slot does not eat its page's time: a load that
queued longer than ``policy.browser.timeout_s`` (within ``policy.browser.queue_timeout_s``) still succeeds;
one whose queue allowance runs out is a retryable ``timeout`` with its position (message and ``data``).
Process model (issue 20, item 2): the launched Chromium runs no address-bar popup WebUI per window (one
renderer process per session less), from one ``--disable-features`` switch (Chromium keeps only the last) that
leaves third-party storage partitioning on; no software WebGL (SwiftShader): pages get no WebGL context, and
screenshots still work.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from test_browser import nav

from agent_legs import Legs
from agent_legs._telemetry._semconv import AGENT_LEGS_BROWSER_QUEUE_DEPTH, AGENT_LEGS_BROWSER_QUEUE_WAIT_MS
from agent_legs.actions.browser._launcher import DISABLED_FEATURES
from agent_legs.actions.browser._service import BrowserService
from agent_legs_testing._procs import comm, descendants


def _browser_argv() -> list[str]:
    """The command line of the Chromium browser process this test process launched (not a renderer's)."""
    for pid in descendants(os.getpid()):
        if "chrom" not in comm(pid):
            continue
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        if argv and not any(a.startswith("--type=") for a in argv):
            return argv
    raise AssertionError("no Chromium browser process found")


def _hold_the_only_slot(legs: Legs, seconds: float) -> tuple[threading.Event, object]:
    held = threading.Event()

    async def hold() -> None:  # another session's long page load
        service = await legs._runtime.service(BrowserService)
        async with service.loads:
            held.set()
            await asyncio.sleep(seconds)

    holder = legs._runtime.submit(hold())
    assert held.wait(10)
    return held, holder


def test_a_load_that_queued_longer_than_its_timeout_still_gets_its_whole_timeout(dirs, website, captured_spans) -> None:
    """Before: the queue's wait counted against timeout_s, so a load granted after 3 s of a 2 s timeout failed."""
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=2, queue_timeout_s=30),
        settings={"browser": {"max_concurrent_loads": 1}},
        tracer_provider=captured_spans.provider,
    ) as legs:
        assert nav(legs, website.site.url("/about"), session="b").ok
        _, holder = _hold_the_only_slot(legs, 3.0)
        captured_spans.clear()
        r = nav(legs, website.site.url("/about"), session="b")
        holder.result(10)  # type: ignore[attr-defined]
    assert r.ok and "About" in r.output, r
    (span,) = captured_spans.tool_spans()
    assert span.attributes[AGENT_LEGS_BROWSER_QUEUE_DEPTH] == 1
    assert span.attributes[AGENT_LEGS_BROWSER_QUEUE_WAIT_MS] >= 2000  # it queued past its 2 s timeout and loaded


def test_a_new_session_that_queued_longer_than_its_timeout_still_opens(dirs, website) -> None:
    """Opening a context and tab waits for a slot too; that wait is not the tab's time either."""
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=2, queue_timeout_s=30),
        settings={"browser": {"max_concurrent_loads": 1}},
    ) as legs:
        assert nav(legs, website.site.url("/about"), session="a").ok
        _, holder = _hold_the_only_slot(legs, 3.0)
        r = nav(legs, website.site.url("/about"), session="new")
        holder.result(10)  # type: ignore[attr-defined]
    assert r.ok and "About" in r.output, r


def test_more_sessions_than_slots_each_with_a_short_timeout_all_succeed(dirs, website) -> None:
    """Eight new sessions on one slot with a 3 s timeout each: together they need longer than 3 s of queue
    (a context, a tab and a slow page each), and every one succeeds: backpressure, not timeouts."""
    ws, st = dirs
    sessions = [f"s{i}" for i in range(8)]
    with (
        Legs(
            workspace=ws,
            state_dir=st,
            policy=website.policy(timeout_s=3, queue_timeout_s=120),
            settings={"browser": {"max_concurrent_loads": 1}},
        ) as legs,
        ThreadPoolExecutor(len(sessions)) as pool,
    ):
        results = list(pool.map(lambda s: nav(legs, website.site.url("/slow"), session=s), sessions))
    assert all(r.ok and "Slow" in r.output for r in results), [(r.error, r.data) for r in results if not r.ok]
    assert website.site.counters["slow_max_in_flight"] == 1


def test_queue_allowance_run_out_is_retryable_with_the_position_and_loads_nothing(dirs, website) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=5, queue_timeout_s=1),
        settings={"browser": {"max_concurrent_loads": 1}},
    ) as legs:
        assert nav(legs, website.site.url("/about"), session="b").ok
        _, holder = _hold_the_only_slot(legs, 4.0)
        website.site.requests.clear()
        t0 = time.monotonic()
        r = nav(legs, website.site.url("/whoami"), session="b")
        took = time.monotonic() - t0
        holder.result(10)  # type: ignore[attr-defined]
        assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r
        assert "queued behind 1 call; nothing was loaded" in r.error.message, r.error.message
        assert "policy.browser.queue_timeout_s=1" in r.error.message
        assert r.data is not None and r.data["queued_behind"] == 1, r.data
        assert took < 4, took  # its queue allowance, not the 4 s the slot was held
        assert not [q for q in website.site.requests if q.path == "/whoami"]
        assert nav(legs, website.site.url("/whoami"), session="b").ok  # no slot lost


def test_chromium_runs_no_popup_webui_per_session_in_one_disable_features_switch(dirs, website) -> None:
    """Before: headless Chromium prewarmed the address bar's popup (chrome://omnibox-popup.top-chrome/) in a
    renderer of its own for every session's window."""
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=website.policy()) as legs:
        for s in ("a", "b", "c"):
            assert nav(legs, website.site.url("/about"), session=s).ok
        service = legs._runtime.submit(legs._runtime.service(BrowserService)).result(10)

        async def inspect() -> list[dict]:
            cdp = await service.browser.new_browser_cdp_session()
            try:
                return list((await cdp.send("Target.getTargets"))["targetInfos"])
            finally:
                await cdp.detach()

        targets = legs._runtime.submit(inspect()).result(20)
        argv = _browser_argv()
    pages = [t for t in targets if t["type"] == "page"]
    assert len(pages) == 3, targets
    assert not [t for t in targets if "top-chrome" in t["url"] or t["type"] == "browser_ui"], targets
    switches = [a for a in argv if a.startswith("--disable-features=")]
    effective = set(switches[-1].split("=", 1)[1].split(","))  # Chromium keeps the last one
    assert {"WebUIOmniboxPopup", "WebUIOmniboxAimPopup", "SpareRendererForSitePerProcess"} <= effective, switches
    assert set(DISABLED_FEATURES) == effective
    assert "ThirdPartyStoragePartitioning" not in effective  # privacy: partitioning stays on


_WEBGL_PROBE = (
    "<p id=probe>probing</p><script>"
    "const c = document.createElement('canvas');"
    "document.getElementById('probe').textContent = 'webgl=' + (c.getContext('webgl') ? 'yes' : 'no') + ' "
    "webgl2=' + (c.getContext('webgl2') ? 'yes' : 'no');"
    "</script>"
)


def test_pages_get_no_software_webgl_and_screenshots_still_work(dirs, website) -> None:
    """Before: Playwright's ``--enable-unsafe-swiftshader`` gave every page WebGL on SwiftShader, the software
    rasterizer loaded in the GPU process (memory per browser; a shader compiler fed by page-supplied shaders)."""
    ws, st = dirs
    website.site.routes["/webgl"] = lambda h, r: h.send_body(
        200, f"<html><body>{_WEBGL_PROBE}</body></html>".encode(), "text/html; charset=utf-8"
    )
    with Legs(workspace=ws, state_dir=st, policy=website.policy()) as legs:
        r = nav(legs, website.site.url("/webgl"), session="a")
        assert r.ok, r
        text = legs.run("browser.content", {}, session="a")
        assert text.ok, text
        assert "webgl=no webgl2=no" in text.output, text.output
        shot = legs.run("browser.screenshot", {}, session="a")
        assert shot.ok, shot
        png = [a for a in shot.artifacts if a.path.endswith(".png")]
        assert png and (ws / png[0].path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
        argv = _browser_argv()
    assert "--disable-software-rasterizer" in argv
