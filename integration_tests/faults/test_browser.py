"""The browser family under faults: Chromium killed by PID mid-navigation, a server that takes a form and
never answers, a browser whose load slots are all taken.

Guarantees checked (docs/reliability.md):
* Chromium killed mid-navigation: the call ends with a clean error (no traceback), the next call relaunches
  and works, and nothing is left behind after ``close()`` (no Chromium process, no download temp dir);
* a click or submit that may have reached the server and then timed out is never ``retryable``, and says
  what may have happened;
* ``policy.browser.timeout_s`` bounds the whole call, opening the session's context and tab and waiting for
  a load slot included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import threading
import time

import pytest

from agent_legs import Legs
from agent_legs.actions.browser._service import BrowserService

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (shared/setup.sh)")


def nav(legs: Legs, url: str, session: str = "default"):
    return legs.run("browser.navigate", {"url": url}, session=session)


def test_chromium_killed_mid_navigation_fails_cleanly_recovers_and_leaves_nothing(dirs, website, procs, caplog) -> None:
    ws, st = dirs
    before = procs.chromium_pids()
    caplog.set_level(logging.WARNING)
    with Legs(workspace=ws, state_dir=st, policy=website.policy(timeout_s=20)) as legs:
        assert nav(legs, website.site.url("/about")).ok
        service = legs._runtime._services[BrowserService]
        download_dirs = [service.downloads.directory]
        ours = procs.chromium_pids() - before
        assert ours
        result: list = []
        t = threading.Thread(target=lambda: result.append(nav(legs, website.site.url("/hang"))))
        t.start()
        deadline = time.monotonic() + 15
        while not any(r.path == "/hang" for r in website.site.requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(r.path == "/hang" for r in website.site.requests), "the navigation never reached the server"
        for pid in ours:  # the whole browser, by PID, mid-navigation
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        t.join(30)
        (r,) = result
        assert not r.ok and r.error.type == "failed" and r.error.retryable, r.error  # a GET: safe to repeat
        assert "closed" in r.error.message or "crashed" in r.error.message, r.error.message
        assert "Traceback" not in r.output
        # The next call relaunches the browser and says what was lost.
        r = nav(legs, website.site.url("/about"))
        assert r.ok, r.error
        assert any("crashed" in e for e in r.data.get("events", [])), r.data
        download_dirs.append(service.downloads.directory)
    assert not [rec for rec in caplog.records if rec.exc_info], "no traceback logged"
    deadline = time.monotonic() + 10
    while procs.chromium_pids() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert procs.chromium_pids() - before == set(), "Chromium processes left behind"
    assert all(d is not None for d in download_dirs)
    assert [d for d in download_dirs if d.exists()] == [], "download temp dirs left behind"


HANGING_FORM = (
    b"<html><head><title>Order</title></head><body><h1>Order</h1><form action='/hang' method='post'>"
    b"<input id='qty' name='qty' value='1'><button id='buy' type='submit'>Buy</button></form></body></html>"
)


@pytest.mark.parametrize("how", ["click", "fill-submit"])
def test_a_submit_that_reached_the_server_and_timed_out_is_not_retryable(dirs, website, how) -> None:
    ws, st = dirs
    website.site.routes["/order"] = lambda h, r: h.send_body(200, HANGING_FORM, "text/html; charset=utf-8")
    with Legs(workspace=ws, state_dir=st, policy=website.policy(timeout_s=3)) as legs:
        assert nav(legs, website.site.url("/order")).ok
        if how == "click":
            r = legs.run("browser.click", {"selector": "#buy"})
        else:
            r = legs.run("browser.fill", {"selector": "#qty", "value": "2", "submit": True})
        posts = [q for q in website.site.requests if q.path == "/hang" and q.method == "POST"]
        assert posts, "the form reached the server: its effect may have happened"
        assert not r.ok and r.error.type == "timeout" and r.error.retryable is False, r.error
        assert "may have taken effect" in r.error.message and "Do not repeat it blindly" in r.error.hint
        # A plain navigation that times out is still safe to repeat.
        r = nav(legs, website.site.url("/hang"))
        assert r.error.type == "timeout" and r.error.retryable


def test_the_timeout_bounds_the_whole_call_including_opening_the_tab(dirs, website) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=3, queue_timeout_s=2),  # the queue's wait has its own allowance
        settings={"browser": {"max_concurrent_loads": 1}},
    ) as legs:
        assert nav(legs, website.site.url("/about"), session="a").ok
        held = threading.Event()

        async def hold_the_only_slot() -> None:  # another session's endless page load
            service = await legs._runtime.service(BrowserService)
            async with service.loads:
                held.set()
                await asyncio.sleep(15)

        holder = legs._runtime.submit(hold_the_only_slot())
        assert held.wait(10)
        t0 = time.monotonic()
        r = nav(legs, website.site.url("/whoami"), session="new")  # its context and tab need the slot
        took = time.monotonic() - t0
        assert r.error and r.error.type == "timeout" and r.error.retryable, r.error
        assert "this session's tab could not be opened" in r.error.message, r.error.message
        assert "queued behind 1 call" in r.error.message and r.data and r.data["queued_behind"] == 1, r
        assert "max_concurrent_loads=1" in r.error.message and "nothing was loaded" in r.error.message
        assert took < 6, took  # the 2 s queue allowance, not the 15 s the slot is held (nor the runtime's 15 s)
        assert not [q for q in website.site.requests if q.path == "/whoami"]
        holder.result(20)
        assert nav(legs, website.site.url("/whoami"), session="new").ok  # the session opens once there is room


FORM_TO_A_FROZEN_PAGE = (
    b"<html><head><title>Order</title></head><body><form action='/frozen' method='post'>"
    b"<input id='qty' name='qty' value='1'><button id='buy' type='submit'>Buy</button></form>"
    b"</body></html>"
)
# The page loads normally; reading it (its title) takes the main thread for good: reading it never answers.
# (A script freezing the page right after its load event raced Playwright seeing that event: the submit
# itself then timed out, in about one run of three under load, with the old and the new code alike.)
FROZEN = (
    b"<html><head><title>Thanks</title><script>Object.defineProperty(document, 'title', {get() { for (;;) {} }})"
    b"</script></head><body>Order received</body></html>"
)


@pytest.mark.parametrize("how", ["click", "fill-submit"])
def test_a_submit_that_went_through_is_not_retryable_when_reading_the_result_fails(dirs, website, how) -> None:
    ws, st = dirs
    website.site.routes["/order2"] = lambda h, r: h.send_body(200, FORM_TO_A_FROZEN_PAGE, "text/html; charset=utf-8")
    website.site.routes["/frozen"] = lambda h, r: h.send_body(200, FROZEN, "text/html; charset=utf-8")
    with Legs(workspace=ws, state_dir=st, policy=website.policy(timeout_s=4)) as legs:
        assert nav(legs, website.site.url("/order2")).ok
        if how == "click":
            r = legs.run("browser.click", {"selector": "#buy"})
        else:
            r = legs.run("browser.fill", {"selector": "#qty", "value": "2", "submit": True})
        assert [q.method for q in website.site.requests if q.path == "/frozen"] == ["POST"]
        assert not r.ok and r.error.retryable is False, r.error
        assert " was done, then: " in r.error.message and "Do not repeat it" in r.error.hint, r.error
        assert nav(legs, website.site.url("/about")).ok  # the session goes on
