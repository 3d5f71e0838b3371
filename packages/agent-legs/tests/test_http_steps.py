"""The Python steps an http.request call takes in the handler, its client and the flows guard, counted
(issue 20, round 9): never timed.

At 50 calls in flight the CPU per call is what bounds throughput, and most of ours is Python function
calls. So, with every result, span, error and finding as before:

* a body read whole (Content-Length within the cap, not encoded) has released its connection: the
  response is not released again (``release()`` and its seven calls), and the connection is reused;
* a response header name is decoded and lower-cased once per name (a bounded memo), its value once
  per response;
* the invalid span (nothing records) gets no call;
* the flows guard remembers an http.request URL whose destination is trusted (a pure function of the
  URL and the fixed policy; bounded), and labels an http.request result without asking whether it is
  private when it cannot be (no credentialed host, no ``private_sources`` pattern naming it);
* the handler, its client and the flows guard make at most ``_STEPS`` Python calls per plain GET.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from agent_legs import Legs

_STEPS = 14  # Python function calls (coroutines counted once) per plain GET in the files below; main had 22
_FILES = ("agent_legs/actions/http/", "agent_legs/_flows/")


def _legs(dirs, http_server, **policy: Any) -> Legs:
    ws, st = dirs
    return Legs(
        workspace=ws,
        state_dir=st,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}, **policy},
    )


def _get(legs: Legs, url: str, n: int = 1) -> None:
    async def main() -> None:
        for _ in range(n):
            r = await legs.arun("http.request", {"method": "GET", "url": url})
            assert r.ok, r.output

    asyncio.run(main())


def test_a_plain_get_takes_few_python_steps_in_the_handler_client_and_flows(dirs, http_server) -> None:
    with _legs(dirs, http_server) as legs:
        url = http_server.url("/1kb")

        async def main() -> dict[str, int]:
            for _ in range(5):  # warm: the service, the client, the memos
                assert (await legs.arun("http.request", {"method": "GET", "url": url})).ok
            frames: list[Any] = []  # kept alive: a frame's id is not reused while counting
            seen: set[int] = set()
            counts: dict[str, int] = {}

            def profile(frame, event, arg) -> None:
                if event != "call" or id(frame) in seen:  # a coroutine's resumption is not a new call
                    return
                name = frame.f_code.co_filename.replace("\\", "/")
                if any(part in name for part in _FILES):
                    seen.add(id(frame))
                    frames.append(frame)
                    key = f"{name.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"
                    counts[key] = counts.get(key, 0) + 1

            calls = 10
            sys.setprofile(profile)
            try:
                for _ in range(calls):
                    r = await legs.arun("http.request", {"method": "GET", "url": url})
                    assert r.ok, r.output
            finally:
                sys.setprofile(None)
            frames.clear()
            return {k: v // calls for k, v in counts.items()}

        per_call = asyncio.run(main())
    assert sum(per_call.values()) <= _STEPS, per_call
    for step in ("_shown_url", "check_headers", "_timeout", "<lambda>", "is_sink", "destinations", "is_private", "_label"):
        assert not any(k.endswith(f":{step}") for k in per_call), (step, per_call)


def test_a_body_read_whole_is_not_released_again_and_its_connection_is_reused(dirs, http_server, monkeypatch) -> None:
    import aiohttp

    from agent_legs.actions.http._service import SERVICES

    releases: list[str] = []
    real = aiohttp.ClientResponse.release

    def counting(self):
        releases.append(self.url.path)
        return real(self)

    monkeypatch.setattr(aiohttp.ClientResponse, "release", counting)
    with _legs(dirs, http_server) as legs:

        async def main() -> tuple[int, int]:
            for _ in range(3):
                r = await legs.arun("http.request", {"method": "GET", "url": http_server.url("/1kb")})
                assert r.ok and r.data["bytes"] == 1024 and r.data["headers"]["content-length"] == "1024"
            client = SERVICES[legs._runtime].clients.current(asyncio.get_running_loop())
            connector = client.session.connector  # type: ignore[union-attr]
            idle = sum(len(c) for c in connector._conns.values())
            r = await legs.arun("http.request", {"method": "GET", "url": http_server.url("/gzip")})
            assert r.ok and r.data["json"] == {"compressed": True}
            return idle, len(connector._acquired)

        idle, acquired = asyncio.run(main())
    assert (idle, acquired) == (1, 0)  # released by the read, kept, reused
    assert releases == ["/gzip"]  # read in decoded chunks: released by the exchange, as before


def test_header_names_are_decoded_once_per_name(monkeypatch) -> None:
    from agent_legs.actions.http import _actions

    decodes: list[bytes] = []

    class Counted(bytes):
        def decode(self, *args: Any, **kwargs: Any) -> str:
            decodes.append(bytes(self))
            return bytes(self).decode(*args, **kwargs)

    monkeypatch.setattr(_actions, "_NAMES", {}, raising=False)
    raw = (
        (Counted(b"Content-Type"), Counted(b"text/plain")),
        (Counted(b"X-Repeat"), Counted(b"a")),
        (Counted(b"x-repeat"), Counted(b"\xe9t\xe9")),  # not UTF-8: read as latin-1
        (Counted(b"Server"), Counted(b"caf\xc3\xa9")),
    )
    first = _actions._plain_headers(raw)
    assert first == {"content-type": "text/plain", "x-repeat": "a, \xe9t\xe9", "server": "café"}
    decodes.clear()
    assert _actions._plain_headers(raw) == first
    assert decodes == [b"text/plain", b"a", b"\xe9t\xe9", b"\xe9t\xe9", b"caf\xc3\xa9"]  # values only (utf-8, then latin-1)


def test_the_header_name_memo_is_bounded(monkeypatch) -> None:
    from agent_legs.actions.http import _actions

    monkeypatch.setattr(_actions, "_NAMES", {})
    raw = [(f"X-N{i}".encode(), b"v") for i in range(_actions._MAX_NAMES + 100)] + [(b"X-" + b"L" * 100, b"long")]
    headers = _actions._plain_headers(raw)
    assert len(headers) == _actions._MAX_NAMES + 101 and headers["x-" + "l" * 100] == "long"
    assert len(_actions._NAMES) == _actions._MAX_NAMES
    assert _actions._plain_headers(raw) == headers  # past the memo, names are decoded as before


def test_the_invalid_span_gets_no_call(dirs, http_server, monkeypatch) -> None:
    from opentelemetry.trace import NonRecordingSpan

    from agent_legs.actions.http import _actions

    called: list[str] = []

    class Counting(NonRecordingSpan):
        def set_attribute(self, *args: Any) -> None:
            called.append("set_attribute")

        def set_status(self, *args: Any, **kwargs: Any) -> None:
            called.append("set_status")

        def end(self, *args: Any) -> None:
            called.append("end")

    monkeypatch.setattr(_actions, "INVALID_SPAN", Counting(_actions.INVALID_SPAN.get_span_context()))
    with _legs(dirs, http_server) as legs:
        assert legs._runtime.tracer.records_nothing()  # so the exchange's span is the (patched) invalid one
        _get(legs, http_server.url("/1kb"), 2)
        _get(legs, http_server.url("/status?code=503"), 1)
    assert called == []


def _counting(monkeypatch, name: str) -> list[Any]:
    from agent_legs._flows import _guard

    calls: list[Any] = []
    real = getattr(_guard, name)

    def counting(*args: Any) -> Any:
        calls.append(args[:2])
        return real(*args)

    monkeypatch.setattr(_guard, name, counting)
    return calls


def test_the_flows_guard_remembers_a_trusted_http_url(dirs, http_server, monkeypatch) -> None:
    from agent_legs._flows import _guard

    calls = _counting(monkeypatch, "destinations")
    with _legs(dirs, http_server) as legs:
        _get(legs, http_server.url("/1kb"), 3)
        _get(legs, http_server.url("/json"), 2)
    assert [args[0] for args in calls] == ["http.request", "http.request"]  # once per URL
    monkeypatch.setattr(_guard, "_TRUSTED_URLS", 2)
    calls.clear()
    with _legs(dirs, http_server) as legs:
        guard = legs._pipeline.flows
        for path in ("/1kb", "/json", "/html", "/html"):
            _get(legs, http_server.url(path))
        assert len(guard._trusted_urls) <= 2  # bounded (cleared when full)
    assert len(calls) == 3


def test_an_untrusted_http_url_is_checked_every_time(dirs, http_server, monkeypatch) -> None:
    calls = _counting(monkeypatch, "destinations")
    with _legs(dirs, http_server, flows={"trusted_destinations": []}) as legs:
        _get(legs, http_server.url("/1kb"), 3)
        assert getattr(legs._pipeline.flows, "_trusted_urls", set()) == set()
    assert len(calls) == 3


def test_an_http_result_is_labelled_without_asking_whether_it_is_private(dirs, http_server, monkeypatch) -> None:
    calls = _counting(monkeypatch, "is_private")
    with _legs(dirs, http_server) as legs:
        guard = legs._pipeline.flows
        r = legs.run("http.request", {"method": "GET", "url": http_server.url("/1kb")}, session="s", call_id="c-1")
        assert r.ok
        assert guard._labels == [("s", "c-1", "http.request")]  # the untrusted label, buffered as before
    assert [args for args in calls if args[1]] == []  # (FlowGuard's own question, with no arguments, aside)


@pytest.mark.parametrize("private", [{"private_sources": ["http.*"]}, None])
def test_an_http_result_that_can_be_private_is_still_asked(dirs, http_server, monkeypatch, private) -> None:
    """A private_sources pattern naming it, or a credentialed host: the full record, as before."""
    from agent_legs._flows._guard import FlowGuard

    calls = _counting(monkeypatch, "is_private")
    ws, st = dirs
    settings = None if private else {"http": {"auth": [{"hosts": ["example.com"], "headers": {"X-Key": "k"}}]}}
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}, **({"flows": private} if private else {})}
    with Legs(workspace=ws, state_dir=st, policy=policy, settings=settings) as legs:
        guard: FlowGuard = legs._pipeline.flows
        assert getattr(guard, "_http_private", True)
        assert legs.run("http.request", {"method": "GET", "url": http_server.url("/1kb")}, session="s").ok
    assert [args[0] for args in calls if args[1]] == ["http.request"]
