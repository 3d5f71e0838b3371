"""What an http.request call leaves for the garbage collector, checked by structure (issue 20, round 8).

Counted, never timed: at 50 calls in flight every GC-tracked object a call holds across its awaits is
promoted by each gen-0 pass, and dies in an old generation (a full collection every ~800 calls). So:

* the aiohttp layer awaits ``ClientSession._request`` itself, not ``request()`` in ``async with`` (a
  kwargs dict, a context-manager object and four enter/exit coroutines per exchange), and still
  releases the connection (it is reused, nothing stays acquired) whether the body is read whole,
  read in chunks, or cut at the cap;
* the reply keeps aiohttp's own header tuple (no list copy per exchange);
* the per-call functions of the handler and the flows guard make no closure cell (a comprehension or
  generator expression reading a local makes that local a cell on every call, plus a function object).
"""

from __future__ import annotations

import asyncio

import pytest

from agent_legs import Legs


def _legs(dirs, http_server, policy_http=None) -> Legs:
    ws, st = dirs
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}
    if policy_http:
        policy["http"] = policy_http
    return Legs(workspace=ws, state_dir=st, policy=policy)


def _pool(legs: Legs) -> tuple[int, int]:
    """(idle connections, acquired connections) of the calling loop's aiohttp client."""
    from agent_legs.actions.http._service import SERVICES

    svc = SERVICES[legs._runtime]
    client = svc.clients.current(asyncio.get_running_loop())
    connector = client.session.connector  # type: ignore[union-attr]
    return sum(len(c) for c in connector._conns.values()), len(connector._acquired)


@pytest.mark.parametrize(("path", "cap"), [("/1kb", None), ("/gzip", None), ("/big?size=200000", 50_000)])
def test_the_aiohttp_exchange_goes_around_request_and_still_releases(dirs, http_server, monkeypatch, path, cap) -> None:
    """``ClientSession.request`` (and its context manager) is never used; the connection is released
    after a whole read, a chunked (encoded) read and a read cut at the cap (that one is closed), and
    it waits for the request's writer only when one still runs (never for a bodiless GET)."""
    import aiohttp

    def refused(*args, **kwargs):
        raise AssertionError("ClientSession.request: a kwargs dict, a context manager and 4 coroutines a call")

    monkeypatch.setattr(aiohttp.ClientSession, "request", refused)
    waits: list[object] = []
    real_wait = aiohttp.ClientResponse.wait_for_close

    async def counting_wait(self):
        waits.append(self)
        await real_wait(self)

    monkeypatch.setattr(aiohttp.ClientResponse, "wait_for_close", counting_wait)
    with _legs(dirs, http_server, {"max_response_bytes": cap} if cap else None) as legs:

        async def main() -> None:
            for _ in range(3):
                r = await legs.arun("http.request", {"method": "GET", "url": http_server.url(path)})
                assert r.ok, r.output
                assert r.data["truncated"] is bool(cap)
                idle, acquired = _pool(legs)
                assert acquired == 0
                assert idle == (0 if cap else 1)  # reused when read whole; a cut one is not kept

        asyncio.run(main())
    assert waits == []  # a bodiless GET's request was written whole: no writer to wait for, no coroutine


def test_the_reply_keeps_aiohttp_header_tuple(dirs, http_server, monkeypatch) -> None:
    """No list copy of the response headers per exchange (the handler only iterates them)."""
    from agent_legs.actions.http._client import AiohttpClient

    replies = []
    real = AiohttpClient.exchange

    async def recording(self, *args):
        reply = await real(self, *args)
        replies.append(reply)
        return reply

    monkeypatch.setattr(AiohttpClient, "exchange", recording)
    with _legs(dirs, http_server) as legs:
        r = legs.run("http.request", {"method": "GET", "url": http_server.url("/1kb")})
        assert r.ok, r.output
    assert isinstance(replies[0].raw_headers, tuple)
    assert r.data["headers"]["content-length"] == "1024"


def test_per_call_functions_make_no_closure_cells() -> None:
    from agent_legs._flows._guard import FlowGuard
    from agent_legs._flows._sinks import destinations
    from agent_legs._flows._sources import is_private
    from agent_legs.actions.http._actions import _result, check_headers

    for fn in (check_headers, _result, is_private, destinations, FlowGuard.check):
        assert fn.__code__.co_cellvars == (), (fn.__qualname__, fn.__code__.co_cellvars)


@pytest.mark.parametrize("char", [chr(i) for i in range(32)] + ["\x7f", "é"])
def test_header_values_refuse_control_characters_but_tab(char) -> None:
    """The one regex refuses exactly what the per-character checks did (every control character but
    tab; DEL and non-ASCII pass, as before)."""
    from agent_legs._errors import ActionError
    from agent_legs.actions.http._actions import check_headers

    if char != "\t" and ord(char) < 32:
        with pytest.raises(ActionError, match="control characters"):
            check_headers({"X-Value": f"a{char}b"})
    else:
        check_headers({"X-Value": f"a{char}b"})


def test_the_fixed_headers_are_the_session_defaults_and_go_out_the_same(dirs, http_server, monkeypatch) -> None:
    """A hop with nothing to add leaves the headers to the aiohttp session (no per-request merge of
    them); what goes out is the same list, in the same order, as for a hop that adds one (plus it)."""
    import aiohttp

    merged: list[tuple[object, list[tuple[str, str]]]] = []
    real = aiohttp.ClientSession._prepare_headers

    def recording(self, headers):
        result = real(self, headers)
        merged.append((headers, list(result.items())))
        return result

    monkeypatch.setattr(aiohttp.ClientSession, "_prepare_headers", recording)
    with _legs(dirs, http_server) as legs:
        url = http_server.url("/1kb")
        assert legs.run("http.request", {"method": "GET", "url": url}).ok
        assert legs.run("http.request", {"method": "GET", "url": url, "headers": {"accept": "text/plain"}}).ok
        ua = legs._runtime.settings.http.user_agent
    (plain_arg, plain), (own_arg, own) = merged
    assert plain_arg is None  # nothing merged per request
    assert plain == [("User-Agent", ua), ("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate")]
    assert own_arg is not None
    assert [(k.lower(), v) for k, v in own] == [
        ("user-agent", ua),
        ("accept", "text/plain"),
        ("accept-encoding", "gzip, deflate"),
    ]
    assert http_server.requests[-2].headers["accept"] == "*/*" and http_server.requests[-1].headers["accept"] == "text/plain"
