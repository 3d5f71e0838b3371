"""The glue of an http.request call around its exchange, checked by what it does (issue 20, round 7).

Counted, never timed, against a real ``Legs`` and a real server on 127.0.0.1: a call asks asyncio for
the running loop once (each ask is a ``getpid()`` syscall in CPython 3.11; the pipeline's deadline
reuses the handler's answer), a known (host, port) costs the aiohttp layer no pinning coroutine, and
a hop with no header of its own sends the service's read-only base headers (no copy), while one that
has some sends its own copy (nothing leaks into the next call). The loop stays the running one: a
second ``asyncio.run`` gets its own client.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from agent_legs import Legs

TOKEN = "tok-glue-secret-456"


def _legs(dirs, http_server, **settings) -> Legs:
    ws, st = dirs
    return Legs(
        workspace=ws,
        state_dir=st,
        secrets={"API_TOKEN": TOKEN},
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
        settings={"http": settings},
    )


def _count_our_loop_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``asyncio.get_running_loop()`` made by agent_legs' own code (the caller's module name)."""
    calls: list[str] = []
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("agent_legs"):
            calls.append(f"{caller}:{sys._getframe(1).f_code.co_name}")
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    return calls


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_call_asks_for_the_running_loop_once(dirs, http_server, monkeypatch, transport) -> None:
    """The handler finds the loop once (``ActionContext.loop``); its client lookup, its exchange's
    deadline and the pipeline's deadline (``Resumed``) reuse it (main asked three times a call)."""
    with _legs(dirs, http_server, transport=transport) as legs:

        async def main() -> None:
            first = await legs.arun("http.request", {"method": "GET", "url": http_server.url("/1kb")})
            assert first.ok, first.output  # the loop's client is made: what follows is the steady state
            calls = _count_our_loop_lookups(monkeypatch)
            for _ in range(3):
                r = await legs.arun("http.request", {"method": "GET", "url": http_server.url("/1kb")})
                assert r.ok, r.output
            assert len(calls) == 3, calls

        asyncio.run(main())


def test_a_known_host_costs_no_pinning_coroutine(dirs, http_server, monkeypatch) -> None:
    """aiohttp's IP-literal check runs once per (host, port): later calls skip it without a coroutine."""
    from agent_legs.actions.http._client import AiohttpClient

    pins: list[tuple[str, int | None]] = []
    real = AiohttpClient._pin_literal

    async def counting(self, key):
        pins.append(key)
        await real(self, key)

    monkeypatch.setattr(AiohttpClient, "_pin_literal", counting)
    with _legs(dirs, http_server) as legs:
        for _ in range(3):
            assert legs.run("http.request", {"method": "GET", "url": http_server.url("/1kb")}).ok
    assert pins == [("127.0.0.1", http_server.port)]


def test_a_hop_without_headers_of_its_own_sends_the_read_only_base_headers(dirs, http_server, monkeypatch) -> None:
    """No copy per hop when nothing is added; a call that adds headers (its own, credentials) sends its
    own copy, and nothing it added reaches the next call nor the shared base."""
    from multidict import CIMultiDictProxy

    from agent_legs.actions.http._client import AiohttpClient
    from agent_legs.actions.http._service import SERVICES

    sent: list[object] = []
    real = AiohttpClient.exchange

    async def recording(self, method, url, headers, content, cap, remaining):
        sent.append(headers)
        return await real(self, method, url, headers, content, cap, remaining)

    monkeypatch.setattr(AiohttpClient, "exchange", recording)
    auth = [{"hosts": [f"127.0.0.1:{http_server.port}"], "headers": {"Authorization": "Bearer {secret:API_TOKEN}"}}]
    with _legs(dirs, http_server) as legs:
        url = http_server.url("/1kb")
        assert legs.run("http.request", {"method": "GET", "url": url}).ok
        assert legs.run("http.request", {"method": "GET", "url": url, "headers": {"X-Mine": "one"}}).ok
        assert legs.run("http.request", {"method": "GET", "url": url}).ok
        svc = SERVICES[legs._runtime]
        assert sent[0] is svc.fixed_headers and sent[2] is svc.fixed_headers
        assert isinstance(svc.fixed_headers, CIMultiDictProxy)  # no layer can add to it
        assert sent[1] is not svc.fixed_headers and sent[1]["X-Mine"] == "one"
        assert "X-Mine" not in svc.base_headers
    first, mine, last = http_server.requests[-3:]
    assert "x-mine" not in first.headers and mine.headers["x-mine"] == "one" and "x-mine" not in last.headers

    sent.clear()
    with _legs(dirs, http_server, auth=auth) as legs:  # credentials: always a copy of its own
        assert legs.run("http.request", {"method": "GET", "url": http_server.url("/1kb")}).ok
        svc = SERVICES[legs._runtime]
        assert sent[0] is not svc.fixed_headers and "Authorization" not in svc.base_headers
    assert http_server.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_each_asyncio_run_still_gets_its_own_client(dirs, http_server) -> None:
    """The loop found once per call is the running one: a second loop gets a client of its own (the
    context's loop is per call, never carried over)."""
    from agent_legs.actions.http._service import SERVICES

    with _legs(dirs, http_server) as legs:
        seen = []

        async def main() -> None:
            r = await legs.arun("http.request", {"method": "GET", "url": http_server.url("/1kb")})
            assert r.ok, r.output
            loop = asyncio.get_running_loop()
            seen.append((loop, SERVICES[legs._runtime].clients.current(loop)))

        asyncio.run(main())
        asyncio.run(main())
    (loop_a, client_a), (loop_b, client_b) = seen
    assert loop_a is not loop_b and client_a is not None and client_b is not None and client_a is not client_b
