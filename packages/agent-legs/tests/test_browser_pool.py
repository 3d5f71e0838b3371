"""A pool of Playwright servers (``settings.browser.ws_endpoints``) and backpressure on the browser's load slots.

The pool: two real ``playwright run-server --unsafe`` processes on loopback. Sessions go to the server with
the fewest live sessions; a server killed takes only its own sessions, whose calls are ``unavailable``
naming it, while new sessions go to the other and the dead one is tried again after its back-off; a bad
endpoint URL is a ``ConfigError`` at start; an unreachable server is ``unavailable`` naming it. Every page
still goes through the session's egress proxy on our side (the denied origin receives nothing).

Backpressure: more sessions than load slots queue, first come first served, and all succeed when the
deadline allows; a deadline that passes in the queue says how many calls were ahead and that nothing was
loaded; the action span carries the queue depth.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_browser import CHROMIUM, nav
from test_browser_remote import _playwright, _stop

from agent_legs import ConfigError, Legs
from agent_legs._telemetry._semconv import AGENT_LEGS_BROWSER_QUEUE_DEPTH, AGENT_LEGS_BROWSER_SERVER
from agent_legs.actions.browser._service import BrowserService
from agent_legs.actions.browser._slots import LoadSlots
from agent_legs_testing import chromium_pids, free_port


def _server() -> tuple[object, str]:
    port = free_port()
    proc = _playwright(["run-server", "--host", "127.0.0.1", "--port", str(port), "--unsafe"], port)
    return proc, f"ws://127.0.0.1:{port}/"


@pytest.fixture
def two_servers():
    started = []
    try:
        started.append(_server())
        started.append(_server())
        yield started
    finally:
        for proc, _ in started:
            _stop(proc)


def _pool_legs(dirs, website, endpoints: list[str], tracer_provider=None, **browser: object) -> Legs:
    ws, st = dirs
    return Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=20),
        settings={"browser": {"ws_endpoints": endpoints, "executable_path": CHROMIUM, **browser}},
        tracer_provider=tracer_provider,
    )


def _placement(legs: Legs) -> dict[str, str]:
    """session -> the endpoint label of its server."""
    svc = legs._runtime._services[BrowserService]
    return {name: s.server.label for name, s in svc.sessions.items() if s.server is not None}


def _open_at_once(legs: Legs, url: str, sessions: list[str]) -> list:
    with ThreadPoolExecutor(len(sessions)) as pool:
        return list(pool.map(lambda s: nav(legs, url, session=s), sessions))


# -- the pool ---------------------------------------------------------------------------------------------------
def test_sessions_spread_over_the_servers_by_load_and_stay_policed(dirs, website, two_servers, captured_spans) -> None:
    (proc_a, a), (proc_b, b) = two_servers
    with _pool_legs(dirs, website, [a, b], tracer_provider=captured_spans.provider) as legs:
        results = _open_at_once(legs, website.site.url("/about"), ["s1", "s2", "s3", "s4"])  # opened at once
        assert all(r.ok and "We sell widgets" in r.output for r in results), [r.output for r in results]
        placed = _placement(legs)
        assert sorted(placed.values()) == sorted([a, a, b, b]), placed  # two each, not four on one
        assert chromium_pids(proc_a.pid) and chromium_pids(proc_b.pid)  # each server runs a browser for us
        servers = {s.attributes[AGENT_LEGS_BROWSER_SERVER] for s in captured_spans.by_name("browser new context")}
        assert servers == {a, b}
        svc = legs._runtime._services[BrowserService]
        for s in svc.sessions.values():  # a remote browser: its proxy is ours, with a credential per session
            assert s.proxy.credentials is not None and s.proxy.peer_uid is None
        on_a = sorted(n for n, e in placed.items() if e == a)
        # Fewest live sessions, not turns: with A's two closed, the next two both go to A.
        for name in on_a:
            legs.close_session(name)
        assert nav(legs, website.site.url("/about"), session="s5").ok
        assert nav(legs, website.site.url("/about"), session="s6").ok
        placed = _placement(legs)
        assert placed["s5"] == a and placed["s6"] == a, placed
        # Each session's page still goes through its own egress proxy on our side.
        r = nav(legs, website.other.url("/direct"), session="s5")
        assert r.error is not None and r.error.type == "denied", r
        r = nav(legs, website.site.url("/embeds"), session="s6")
        assert r.ok and r.data["blocked_requests"], r.data
    assert website.other.requests == []
    assert proc_a.poll() is None and proc_b.poll() is None  # the servers are not ours to stop


def test_a_server_that_dies_takes_only_its_sessions(dirs, website, two_servers) -> None:
    """Killing one server: its sessions' calls (in flight, or the next one) are ``unavailable`` naming it;
    the other server's sessions carry on; new sessions go to the other; after the back-off the restarted
    server takes sessions again."""
    (proc_a, a), (_, b) = two_servers
    with _pool_legs(dirs, website, [a, b], ws_retry_s=2) as legs:
        assert nav(legs, website.site.url("/about"), session="a1").ok
        assert nav(legs, website.site.url("/about"), session="b1").ok
        assert nav(legs, website.site.url("/about"), session="a2").ok
        assert _placement(legs) == {"a1": a, "b1": b, "a2": a}
        # a2 has a page load in flight when A dies
        website.site.requests.clear()
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(nav, legs, website.site.url("/hang"), "a2")
            deadline = time.monotonic() + 15
            while not [q for q in website.site.requests if q.path == "/hang"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [q for q in website.site.requests if q.path == "/hang"], "the page load never reached the site"
            _stop(proc_a)
            r = in_flight.result(30)
        assert r.error is not None and r.error.type == "unavailable" and r.error.retryable, r
        assert a in r.error.message and "went away" in r.error.message, r.error.message
        assert "run-server" in (r.error.hint or "") and a in (r.error.hint or "")
        # a1 was idle: its next call is told its page was lost, naming the server
        r = legs.run("browser.content", {}, session="a1")
        assert r.error is not None and r.error.type == "unavailable" and r.error.retryable, r
        assert a in r.error.message and "/about" in r.error.message and "lost" in r.error.message
        assert legs.run("browser.content", {}, session="b1").ok  # the other server's session carries on
        assert nav(legs, website.site.url("/about"), session="n1").ok  # a new session: on the live server
        r = nav(legs, website.site.url("/about"), session="a1")  # the retry opens a1 again, elsewhere
        assert r.ok, r.output
        assert _placement(legs) == {"b1": b, "n1": b, "a1": b}
        # A comes back on the same port; after its back-off it takes new sessions again. The back-off is
        # 2 s, doubled for each further failure while A was down (new sessions tried it): at most 8x.
        port = int(a.rsplit(":", 1)[1].strip("/"))
        restarted = _playwright(["run-server", "--host", "127.0.0.1", "--port", str(port), "--unsafe"], port)
        try:
            placed_on_a = None
            deadline = time.monotonic() + 2 * 8 + 5
            n = 2
            while placed_on_a is None and time.monotonic() < deadline:
                time.sleep(1.0)
                assert nav(legs, website.site.url("/about"), session=f"n{n}").ok
                if _placement(legs)[f"n{n}"] == a:  # fewest live sessions: A has none
                    placed_on_a = f"n{n}"
                n += 1
            assert placed_on_a is not None, f"the restarted server took no session: {_placement(legs)}"
        finally:
            legs.close()
            _stop(restarted)


@pytest.mark.parametrize(
    ("endpoints", "says"),
    [
        (["http://127.0.0.1:3000/"], "not a ws:// or wss:// URL"),
        (["ws://"], "names no host"),
        (["ws://127.0.0.1:port/"], "is not a URL"),
        (["ws://127.0.0.1:99999/"], "is not a URL"),
        (["ws://127.0.0.1:3000/", "ws://127.0.0.1:3000/"], "listed twice"),
        ("ws://127.0.0.1:3000/", "valid list"),
    ],
)
def test_a_bad_endpoint_url_is_a_config_error(dirs, endpoints, says: str) -> None:
    ws, st = dirs
    with pytest.raises(ConfigError) as raised:
        Legs(workspace=ws, state_dir=st, settings={"browser": {"ws_endpoints": endpoints}})
    assert "settings.browser.ws_endpoints" in str(raised.value) and says in str(raised.value), str(raised.value)


def test_a_pool_and_another_browser_at_once_is_a_config_error(dirs) -> None:
    ws, st = dirs
    with pytest.raises(ConfigError, match="ws_endpoint and ws_endpoints are set together"):
        Legs(
            workspace=ws,
            state_dir=st,
            settings={"browser": {"ws_endpoints": ["ws://127.0.0.1:3000/"], "ws_endpoint": "ws://127.0.0.1:3001/"}},
        )


def test_an_unreachable_server_is_unavailable_naming_it(dirs, website) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/"  # nothing listens there
    with _pool_legs(dirs, website, [f"{dead}?token=s3cret"]) as legs:
        r = nav(legs, website.site.url("/about"))
    assert r.error is not None and r.error.type == "unavailable" and r.error.retryable, r
    assert dead in r.error.message and "cannot connect" in r.error.message, r.error.message
    assert "s3cret" not in r.error.message + (r.error.hint or "")  # the endpoint is named without its query
    assert "run-server" in (r.error.hint or "")
    assert website.site.requests == []


def test_an_unreachable_server_is_skipped_for_a_live_one(dirs, website) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/"
    proc, live = _server()
    try:
        with _pool_legs(dirs, website, [dead, live]) as legs:
            assert nav(legs, website.site.url("/about"), session="x").ok
            assert nav(legs, website.site.url("/about"), session="y").ok  # the dead one is in its back-off
            assert _placement(legs) == {"x": live, "y": live}
            svc = legs._runtime._services[BrowserService]
            down = svc.pool.servers[0]
            assert down.failures == 1 and "cannot connect" in down.reason
    finally:
        _stop(proc)


def test_a_server_without_our_flags_is_left_out(dirs, website, tmp_path) -> None:
    """A server whose Chromium lacks the WebRTC flags is refused like one remote browser, and left out of the
    pool like a dead one: the session goes to the other server; nothing is fetched through the refused one."""
    import json

    from test_browser_remote import _NO_SANDBOX

    port = free_port()
    config = tmp_path / "server.json"
    config.write_text(
        json.dumps({"executablePath": CHROMIUM, "host": "127.0.0.1", "port": port, "wsPath": "/pw", "args": _NO_SANDBOX})
    )
    bare = _playwright(["launch-server", "--browser", "chromium", "--config", str(config)], port)
    proc, live = _server()
    try:
        with _pool_legs(dirs, website, [f"ws://127.0.0.1:{port}/pw", live]) as legs:
            assert nav(legs, website.site.url("/about"), session="x").ok
            assert _placement(legs) == {"x": live}
            refused = legs._runtime._services[BrowserService].pool.servers[0]
            assert "refused" in refused.reason and "--webrtc-ip-handling-policy" in refused.reason, refused.reason
    finally:
        _stop(bare)
        _stop(proc)


# -- backpressure ----------------------------------------------------------------------------------------------
def test_more_sessions_than_slots_queue_and_none_fails_for_load(dirs, website, captured_spans) -> None:
    ws, st = dirs
    sessions = [f"s{i}" for i in range(6)]
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=30),
        settings={"browser": {"max_concurrent_loads": 1}},
        tracer_provider=captured_spans.provider,
    ) as legs:
        results = _open_at_once(legs, website.site.url("/slow"), sessions)  # opening and loading, 6 on 1 slot
        assert all(r.ok and "Slow" in r.output for r in results), [r.output for r in results]
        captured_spans.clear()
        website.site.counters.clear()
        results = _open_at_once(legs, website.site.url("/slow"), sessions)
    assert all(r.ok for r in results), [r.output for r in results]
    assert website.site.counters["slow_max_in_flight"] == 1
    depths = [s.attributes[AGENT_LEGS_BROWSER_QUEUE_DEPTH] for s in captured_spans.tool_spans()]
    assert len(depths) == len(sessions) and max(depths) >= 2, depths  # calls queued, and the span says so


def test_a_deadline_that_passes_in_the_queue_names_the_position(dirs, website, captured_spans) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(timeout_s=3, queue_timeout_s=2),
        settings={"browser": {"max_concurrent_loads": 1}},
        tracer_provider=captured_spans.provider,
    ) as legs:
        assert nav(legs, website.site.url("/about"), session="b").ok
        service = legs._runtime.submit(legs._runtime.service(BrowserService)).result(10)
        held, release = threading.Event(), threading.Event()

        async def hold_the_only_slot() -> None:  # another session's endless page load
            async with service.loads:
                held.set()
                while not release.is_set():
                    await asyncio.sleep(0.01)

        async def queue_for_it() -> None:  # and one more call queued before ours
            async with service.loads:
                pass

        holder = legs._runtime.submit(hold_the_only_slot())
        assert held.wait(10)
        queued = legs._runtime.submit(queue_for_it())
        deadline = time.monotonic() + 5
        while service.loads.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        website.site.requests.clear()
        captured_spans.clear()
        r = nav(legs, website.site.url("/whoami"), session="b")
        assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r
        assert "queued behind 2 calls; nothing was loaded" in r.error.message, r.error.message
        assert "policy.browser.queue_timeout_s=2" in r.error.message
        assert r.data is not None and r.data["queued_behind"] == 2 and r.data["queued_s"] >= 1.9, r.data
        assert "max_concurrent_loads=1" in r.error.message and "busy, not broken" in (r.error.hint or "")
        assert not [q for q in website.site.requests if q.path == "/whoami"]
        (span,) = captured_spans.tool_spans()
        assert span.attributes[AGENT_LEGS_BROWSER_QUEUE_DEPTH] == 2
        release.set()
        holder.result(10)
        queued.result(10)
        assert nav(legs, website.site.url("/whoami"), session="b").ok  # the slots are free again, none lost
        assert service.loads.busy == 0 and service.loads.waiting == 0


def test_a_load_that_queued_then_timed_out_says_how_long_it_queued(dirs, website) -> None:
    """A call that got its slot late has less time for the page: its timeout says so (the queue, not the page)."""
    ws, st = dirs
    with Legs(
        workspace=ws, state_dir=st, policy=website.policy(timeout_s=4), settings={"browser": {"max_concurrent_loads": 1}}
    ) as legs:
        assert nav(legs, website.site.url("/about"), session="b").ok
        service = legs._runtime.submit(legs._runtime.service(BrowserService)).result(10)
        held = threading.Event()

        async def hold_the_slot_a_while() -> None:
            async with service.loads:
                held.set()
                await asyncio.sleep(1.5)

        holder = legs._runtime.submit(hold_the_slot_a_while())
        assert held.wait(10)
        r = nav(legs, website.site.url("/hang"), session="b")  # gets the slot after ~1.5 s, then the page hangs
        holder.result(10)
    assert r.error is not None and r.error.type == "timeout" and r.error.retryable, r
    assert "queued for a load slot behind up to 1 call" in r.error.message, r.error.message
    assert "busy, not broken" in (r.error.hint or "")


def test_load_slots_are_first_come_first_served() -> None:
    async def scenario() -> list[int]:
        slots = LoadSlots(1)
        order: list[int] = []
        await slots.acquire()

        async def call(i: int) -> None:
            ahead = await slots.acquire()
            assert ahead == i + 1  # the holder and the i before it
            order.append(i)
            slots.release()

        tasks = []
        for i in range(4):
            tasks.append(asyncio.ensure_future(call(i)))
            await asyncio.sleep(0)
        gives_up = asyncio.ensure_future(slots.acquire(within=0.05))  # fifth in line, gives up: takes nothing
        await asyncio.sleep(0.1)
        assert gives_up.done() and gives_up.exception() is not None
        assert gives_up.exception().ahead == 5  # type: ignore[union-attr]
        slots.release()
        await asyncio.gather(*tasks)
        assert slots.busy == 0 and slots.waiting == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3]


def test_doctor_checks_every_server_of_the_pool() -> None:
    from agent_legs import Settings
    from agent_legs._doctor import check_browser

    dead = f"ws://127.0.0.1:{free_port()}/"
    proc, live = _server()
    try:
        check = check_browser(Settings.model_validate({"browser": {"ws_endpoints": [live, f"{dead}?token=s3cret"]}}))
        assert check.status == "warn" and dead in check.detail and live not in check.detail, check
        assert "s3cret" not in check.detail and "run-server" in (check.fix or "")
        assert check_browser(Settings.model_validate({"browser": {"ws_endpoints": [live]}})).status == "ok"
        assert check_browser(Settings.model_validate({"browser": {"ws_endpoints": [dead]}})).status == "fail"
    finally:
        _stop(proc)
