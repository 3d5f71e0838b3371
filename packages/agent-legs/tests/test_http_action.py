"""http.request against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from agent_legs import Legs
from agent_legs_testing import free_port

TOKEN = "tok-very-secret-123"


@pytest.fixture(params=["aiohttp", "httpx"])
def legs(request, dirs, http_server, second_http_server, captured_spans):
    """Every test runs on both connection layers (each pinned to guard-checked addresses)."""
    ws, st = dirs
    a, b = http_server, second_http_server
    with Legs(
        workspace=ws,
        state_dir=st,
        secrets={"API_TOKEN": TOKEN},
        policy={
            "network": {"allow_hosts": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]},
            "http": {"max_response_bytes": 100_000, "methods": ["GET", "HEAD", "POST", "PUT"]},
        },
        settings={
            "http": {
                "transport": request.param,
                "auth": [{"hosts": [f"127.0.0.1:{a.port}"], "headers": {"Authorization": "Bearer {secret:API_TOKEN}"}}],
            }
        },
        tracer_provider=captured_spans.provider,
    ) as legs:
        yield legs


def get(legs, url, **kw):
    return legs.run("http.request", {"method": kw.pop("method", "GET"), "url": url, **kw})


def test_json_is_compact_and_structured(legs, http_server) -> None:
    # Compact, not indented: indentation cost ~1.6x the characters on list-heavy data (the cap cut sooner).
    r = get(legs, http_server.url("/json"))
    assert r.ok and r.data["status"] == 200 and r.data["json"]["items"][1]["name"] == "beta"
    assert '{"id":1,"name":"alpha"}' in r.output and r.output.startswith("HTTP 200 OK")
    assert r.output.split("\n\n", 1)[1] == json.dumps(r.data["json"], separators=(",", ":"), ensure_ascii=False)


def test_html_becomes_markdown(legs, http_server) -> None:
    r = get(legs, http_server.url("/html"))
    assert "# Hello" in r.output and "**bold**" in r.output
    assert f"[a link]({http_server.url('/json')})" in r.output  # absolute: the model can follow it as it is
    assert "var x" not in r.output


def test_html_links_resolve_against_the_final_url(legs, http_server, second_http_server) -> None:
    @second_http_server.route("/docs/guide/page")
    def page(h, r):
        h.send_body(
            200,
            b"<html><body><a href='next'>next</a> <a href='/top'>top</a> <a href='../up?x=1'>up</a>"
            b" <a href='?page=2'>more</a> <a href='#s2'>section</a>"
            b" <a href='https://example.org/abs'>abs</a> <img src='img/a.png' alt='pic'></body></html>",
            "text/html",
        )

    final = second_http_server.url("/docs/guide/page")
    r = get(legs, http_server.url(f"/redirect?to={final}"))  # links resolve against where the page is, not the request
    assert r.ok and r.data["url"] == final, r.output
    base = second_http_server.url("")
    for expected in (
        f"[next]({base}/docs/guide/next)",
        f"[top]({base}/top)",
        f"[up]({base}/docs/up?x=1)",
        f"[more]({final}?page=2)",
        f"[section]({final}#s2)",
        "[abs](https://example.org/abs)",
        f"![pic]({base}/docs/guide/img/a.png)",
    ):
        assert expected in r.output, (expected, r.output)


def test_post_json_and_body(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/echo"), "json": {"a": [1, 2]}})
    assert r.ok
    received = http_server.requests[-1]
    assert received.method == "POST" and received.body == b'{"a": [1, 2]}'
    assert received.headers["content-type"] == "application/json"
    legs.run("http.request", {"method": "PUT", "url": http_server.url("/echo"), "body": "plain text"})
    assert http_server.requests[-1].body == b"plain text"


def test_params_merge_and_empty_params_keep_query(legs, http_server) -> None:
    get(legs, http_server.url("/echo?a=1"), params={})
    assert http_server.requests[-1].query == {"a": ["1"]}
    get(legs, http_server.url("/echo?a=1"), params={"b": 2, "c": True})
    assert http_server.requests[-1].query == {"a": ["1"], "b": ["2"], "c": ["true"]}


def test_404_is_ok_with_status(legs, http_server) -> None:
    r = get(legs, http_server.url("/nope"))
    assert r.ok and r.data["status"] == 404 and r.error is None


def test_credentials_injected_only_for_their_host_and_never_shown(legs, http_server, second_http_server) -> None:
    r = get(legs, http_server.url("/echo"))
    assert http_server.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in r.output and TOKEN not in str(r.data) and "[REDACTED:API_TOKEN]" in r.output
    get(legs, second_http_server.url("/echo"))
    assert "authorization" not in second_http_server.requests[-1].headers


def test_auth_not_carried_across_cross_host_redirect(legs, http_server, second_http_server) -> None:
    target = second_http_server.url("/echo")
    r = get(legs, http_server.url(f"/redirect?to={target}"), headers={"Authorization": "Basic dXNlcjpwdw==", "X-Trace": "1"})
    assert r.ok and r.data["redirects"][0]["to"] == target
    hop = second_http_server.requests[-1].headers
    # issue 13.9: a custom header is not carried to another origin either (it was before)
    assert "authorization" not in hop and "x-trace" not in hop
    assert http_server.requests[-1].headers["x-trace"] == "1"


def test_redirect_303_turns_post_into_get(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/redirect?to=/echo&status=303"), "json": {"x": 1}})
    assert r.ok and http_server.requests[-1].method == "GET" and http_server.requests[-1].body == b""


def test_redirect_307_keeps_method_and_body(legs, http_server) -> None:
    legs.run("http.request", {"method": "POST", "url": http_server.url("/redirect?to=/echo&status=307"), "body": "b"})
    assert http_server.requests[-1].method == "POST" and http_server.requests[-1].body == b"b"


def test_redirect_limit(dirs, http_server) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}, "http": {"max_redirects": 2}},
    ) as legs:
        url = http_server.url("/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/json")
        r = get(legs, url)
        assert r.error.type == "failed" and "max_redirects" in r.output


def test_response_cap_stops_reading(legs, http_server) -> None:
    r = get(legs, http_server.url("/big?size=5000000"))
    assert r.ok and r.data["truncated"] and r.data["bytes"] == 100_000
    assert "response truncated at 100000 bytes" in r.output


def test_binary_is_summarised(legs, http_server) -> None:
    r = get(legs, http_server.url("/binary"))
    assert r.ok and "[binary content: 1024 bytes of application/octet-stream]" in r.output


def test_retry_on_503_honours_retry_after(legs, http_server) -> None:
    calls = []

    @http_server.route("/flaky")
    def flaky(h, rec):
        calls.append(1)
        if len(calls) < 3:
            h.send_body(503, b"busy", headers={"Retry-After": "0"})
        else:
            h.send_json(200, {"ok": True})

    r = get(legs, http_server.url("/flaky"))
    assert r.ok and r.data["status"] == 200 and len(calls) == 3


def test_no_retry_for_post(legs, http_server) -> None:
    calls = []

    @http_server.route("/flaky")
    def flaky(h, rec):
        calls.append(1)
        h.send_body(503, b"busy", headers={"Retry-After": "0"})

    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/flaky"), "body": "x"})
    assert r.ok and r.data["status"] == 503 and len(calls) == 1


def test_timeout(legs, http_server) -> None:
    r = get(legs, http_server.url("/slow?s=3"), timeout_s=0.5)
    assert r.error.type == "timeout" and r.error.retryable


def test_connection_refused_is_unavailable(dirs) -> None:
    port = free_port()  # nobody listens there: connection refused
    ws, st = dirs
    with Legs(
        workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}, settings={"http": {"retries": 0}}
    ) as legs:
        r = get(legs, f"http://127.0.0.1:{port}/")
        assert r.error.type == "unavailable" and r.error.retryable


def test_method_policy(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "DELETE", "url": http_server.url("/echo")})
    assert r.error.type == "denied" and "policy.http.methods" in r.error.message
    assert http_server.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "v\r\nInjected: 1"},
        {"X-A": "v\nx"},
        {"X-A": "v\x00"},
        {"Bad Name": "v"},
        {"X-A\r\nB": "v"},
        {"X-A\n": "v"},  # a name's trailing newline: a regex's "$" matches before it
        {"Host\n": "evil.com"},  # ... and then the forbidden-name check, by its exact name, misses it
        {"Host": "evil.com"},
        {"Transfer-Encoding": "chunked"},
        {"Content-Length": "0"},
    ],
)
def test_header_injection_is_invalid(legs, http_server, headers) -> None:
    r = get(legs, http_server.url("/echo"), headers=headers)
    assert r.error.type == "invalid_input"
    assert http_server.requests == []


def test_json_and_body_are_exclusive(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/echo"), "json": {}, "body": "x"})
    assert r.error.type == "invalid_input" and "either json or body" in r.error.message


def test_lowercase_method_accepted(legs, http_server) -> None:
    assert legs.run("http.request", {"method": "get", "url": http_server.url("/json")}).ok


def test_head(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "HEAD", "url": http_server.url("/json")})
    assert r.ok and r.data["status"] == 200 and r.data["bytes"] == 0


def test_child_span_per_request(legs, http_server, captured_spans) -> None:
    get(legs, http_server.url("/redirect?to=/json"))
    tool = captured_spans.by_name("execute_tool http_request")[0]
    http_spans = captured_spans.by_name("HTTP GET")
    assert len(http_spans) == 2
    for s in http_spans:
        assert s.parent.span_id == tool.context.span_id
        assert s.attributes["server.port"] == http_server.port
    assert [s.attributes["http.response.status_code"] for s in http_spans] == [302, 200]


def test_default_policy_refuses_loopback(dirs, http_server) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st) as legs:
        r = get(legs, http_server.url("/json"))
        assert r.error.type == "denied" and "loopback" in r.error.message and "allow_hosts" in r.error.hint
    assert http_server.requests == []


def test_1kb_response(legs, http_server) -> None:
    r = get(legs, http_server.url("/1kb"))
    assert r.ok and r.data["bytes"] == 1024 and r.output.endswith("x" * 1024)
    assert r.data["elapsed_ms"] > 0 and r.data["url"] == http_server.url("/1kb") and not r.data["truncated"]


def test_gzip_is_decoded(legs, http_server) -> None:
    r = get(legs, http_server.url("/gzip"))
    assert r.ok and r.data["json"] == {"compressed": True}


def test_a_small_compressed_body_is_cut_at_the_cap_once_decoded(legs, http_server) -> None:
    # A few hundred bytes on the wire (its Content-Length far below the cap) that decode to 3 MB: the
    # cap holds for the decoded bytes, whichever way the body is read.
    import gzip

    bomb = gzip.compress(b"a" * 3_000_000)
    assert len(bomb) < 100_000

    @http_server.route("/bomb")
    def _bomb(h, rec):
        h.send_body(200, bomb, "text/plain", {"Content-Encoding": "gzip"})

    r = get(legs, http_server.url("/bomb"))
    assert r.ok and r.data["truncated"] and r.data["bytes"] == 100_000
    assert "response truncated at 100000 bytes" in r.output


@pytest.mark.parametrize("size", [99_999, 100_000, 100_001])
def test_a_plain_body_at_the_cap_is_whole_and_one_byte_past_it_is_cut(legs, http_server, size) -> None:
    r = get(legs, http_server.url(f"/big?size={size}"))
    assert r.ok and r.data["bytes"] == min(size, 100_000)
    assert r.data["truncated"] is (size > 100_000)


def test_redirect_re_checked_against_policy(legs, http_server) -> None:
    # Allowed host, then a redirect to a loopback port the policy does not list.
    r = get(legs, http_server.url("/redirect?to=http://127.0.0.1:9/x"))
    assert r.error.type == "denied" and "redirect to http://127.0.0.1:9/x refused" in r.error.message
    assert r.data["redirects"][0]["to"] == "http://127.0.0.1:9/x"


def test_credential_like_headers_not_carried_across_hosts(legs, http_server, second_http_server) -> None:
    target = second_http_server.url("/echo")
    headers = {"X-Api-Key": "k1", "X-Auth-Token": "t1", "Cookie": "a=b", "Accept": "application/json"}
    r = get(legs, http_server.url(f"/redirect?to={target}"), headers=headers)
    assert r.ok
    first, hop = http_server.requests[-1].headers, second_http_server.requests[-1].headers
    assert first["x-api-key"] == "k1" and first["cookie"] == "a=b"
    assert not {"x-api-key", "x-auth-token", "cookie", "authorization"} & set(hop) and hop["accept"] == "application/json"


def test_configured_credentials_follow_a_same_host_redirect(legs, http_server) -> None:
    r = get(legs, http_server.url("/redirect?to=/echo"))
    assert r.ok and http_server.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_cookies_live_for_one_call_only(legs, http_server) -> None:
    r = get(legs, http_server.url("/set-cookie?name=sid&value=s1&to=/echo"))
    assert r.ok and http_server.requests[-1].headers.get("cookie") == "sid=s1"
    assert "set-cookie" not in r.data["headers"]
    get(
        legs,
        http_server.url("/echo"),
    )
    assert "cookie" not in http_server.requests[-1].headers  # no jar shared between calls or sessions


def test_redirect_301_post_becomes_get_and_head_stays_head(legs, http_server) -> None:
    legs.run("http.request", {"method": "POST", "url": http_server.url("/redirect?to=/echo&status=301"), "body": "x"})
    assert http_server.requests[-1].method == "GET" and http_server.requests[-1].body == b""
    legs.run("http.request", {"method": "HEAD", "url": http_server.url("/redirect?to=/echo&status=303")})
    assert http_server.requests[-1].method == "HEAD"


def test_slow_body_is_bounded_by_the_deadline(legs, http_server) -> None:
    import time

    t0 = time.monotonic()
    r = get(legs, http_server.url("/drip?chunks=40&every=0.1"), timeout_s=0.8)
    assert r.error.type == "timeout" and r.error.retryable
    assert time.monotonic() - t0 < 2.0  # the trickling body did not stretch the call


def test_retry_after_beyond_the_deadline_is_not_waited_for(legs, http_server) -> None:
    import time

    calls = []

    @http_server.route("/busy")
    def busy(h, rec):
        calls.append(1)
        h.send_body(503, b"busy", headers={"Retry-After": "120"})

    t0 = time.monotonic()
    r = get(legs, http_server.url("/busy"), timeout_s=2)
    assert r.ok and r.data["status"] == 503 and len(calls) == 1 and time.monotonic() - t0 < 1.5


def test_retry_on_429_with_http_date(legs, http_server) -> None:
    import email.utils
    import time

    calls = []

    @http_server.route("/limited")
    def limited(h, rec):
        calls.append(1)
        if len(calls) == 1:
            h.send_body(429, b"slow down", headers={"Retry-After": email.utils.formatdate(time.time() + 1, usegmt=True)})
        else:
            h.send_json(200, {"ok": True})

    r = get(legs, http_server.url("/limited"))
    assert r.ok and r.data["status"] == 200 and r.data["retries"] == 1 and len(calls) == 2


def test_connect_errors_are_retried_for_idempotent_methods_only(dirs) -> None:
    port = free_port()  # nobody listens there: connection refused
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{port}"]}},
        settings={"http": {"retries": 2}},
        tracer_provider=None,
    ) as legs:
        r = get(legs, f"http://127.0.0.1:{port}/")
        assert r.error.type == "unavailable"
        r = legs.run("http.request", {"method": "POST", "url": f"http://127.0.0.1:{port}/", "body": "x"})
        assert r.error.type == "unavailable"


def test_invalid_urls_are_invalid_input(legs, http_server) -> None:
    for url in ("http://exa mple.com/", "http://[::1/", "not a url", f"{http_server.url('/')}\r\nX: y"):
        r = get(legs, url)
        assert r.error.type in ("invalid_input", "denied"), (url, r.error)
    assert http_server.requests == []


def test_default_port_and_policy_port_rules(dirs, http_server) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": ["127.0.0.1:1"]}}) as legs:
        r = get(legs, http_server.url("/json"))
        assert r.error.type == "denied" and "policy.network.allow_hosts" in r.error.message
    assert http_server.requests == []


# -- inline execution: one pinned transport per caller loop ------------------------------------------


def _transports(legs) -> dict:
    from agent_legs.actions.http._service import SERVICES

    svc = SERVICES.get(legs._runtime)
    return {} if svc is None else svc.clients.loops()


def _no_leaks(caplog) -> None:
    import gc

    gc.collect()
    leaks = [r.getMessage() for r in caplog.records if "nclosed" in r.getMessage()]
    assert not leaks, leaks


def test_arun_across_several_asyncio_run_calls(dirs, http_server, caplog) -> None:
    import asyncio

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:
        for _ in range(3):

            async def main() -> None:
                results = await asyncio.gather(
                    *(legs.arun("http.request", {"method": "GET", "url": http_server.url("/json")}) for _ in range(5))
                )
                assert all(r.ok for r in results)
                assert asyncio.get_running_loop() in _transports(legs)

            asyncio.run(main())
            # asyncio.run's shutdown of async generators closed that loop's transport
            assert list(_transports(legs)) == [legs._runtime.loop]
            _no_leaks(caplog)


def test_async_with_and_sync_close_inside_a_running_loop(dirs, http_server, caplog) -> None:
    import asyncio
    import time

    ws, st = dirs
    policy = {"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}

    async def main() -> None:
        async with Legs(workspace=ws, state_dir=st, policy=policy) as legs:
            assert (await legs.arun("http.request", {"method": "GET", "url": http_server.url("/json")})).ok
        with Legs(workspace=ws, state_dir=st, policy=policy) as legs:  # close() blocks this loop
            assert (await legs.arun("http.request", {"method": "GET", "url": http_server.url("/json")})).ok
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 3  # did not wait on the blocked loop
        await asyncio.sleep(0.05)  # the loop runs the scheduled close

    asyncio.run(main())
    _no_leaks(caplog)


def test_sync_run_from_threads_and_inside_a_running_loop(dirs, http_server) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:

        def call(_: int) -> bool:
            return legs.run("http.request", {"method": "GET", "url": http_server.url("/json")}).ok

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(call, range(16)))

        async def inside() -> bool:
            return call(0)  # run() from a loop's thread goes through the runtime loop

        assert asyncio.run(inside())
        assert len(_transports(legs)) >= 2


def test_cancelling_arun_stops_the_request(dirs, http_server) -> None:
    import asyncio
    import contextlib
    import time

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:

        async def main() -> float:
            task = asyncio.ensure_future(legs.arun("http.request", {"method": "GET", "url": http_server.url("/slow?s=5")}))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return time.monotonic() - t0

        assert asyncio.run(main()) < 0.5
        assert legs.run("http.request", {"method": "GET", "url": http_server.url("/json")}).ok


def test_sync_run_transport_closed_with_legs(dirs, http_server, caplog) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:
        assert legs.run("http.request", {"method": "GET", "url": http_server.url("/json")}).ok
        assert len(_transports(legs)) == 2  # the runtime loop's and this thread's private loop's
    _no_leaks(caplog)


# -- pinning: connections go to the guard's answer; TLS stays on the host name -------------------------


def test_connection_uses_the_guards_answer_not_system_dns(dirs, http_server) -> None:
    """``api.pinned.test`` exists only in the injected resolver: reaching the server proves the
    connection went to the address the guard checked, with the name kept in the Host header."""
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if host == "api.pinned.test" else []

    ws, st = dirs
    for transport in ("aiohttp", "httpx"):
        with Legs(
            workspace=ws,
            state_dir=st,
            resolver=resolver,
            settings={"http": {"transport": transport}},
            policy={"network": {"allow_hosts": [f"api.pinned.test:{http_server.port}"]}},
        ) as legs:
            r = get(legs, f"http://api.pinned.test:{http_server.port}/echo")
            assert r.ok, r.output
            assert http_server.requests[-1].headers["host"] == f"api.pinned.test:{http_server.port}"
    assert calls.count("api.pinned.test") >= 2


@pytest.fixture
def tls_server():
    """An HTTPS server on 127.0.0.1 whose certificate names only ``api.pinned.test``."""
    import ssl
    import threading

    import trustme

    from agent_legs_testing.http_server import start_server

    ca = trustme.CA()
    cert = ca.issue_cert("api.pinned.test")
    srv, httpd = start_server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    httpd.shutdown()  # restart the same listener wrapped in TLS
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    yield srv, client_ctx
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("layer", ["aiohttp", "httpx"])
async def test_tls_is_verified_against_the_name_while_pinned_to_the_ip(layer, tls_server) -> None:
    from multidict import CIMultiDict

    from agent_legs._egress import EgressGuard
    from agent_legs._policy import NetworkPolicy
    from agent_legs.actions.http._client import AiohttpClient, ConnectFailed, HttpxClient, tls_failure

    srv, client_ctx = tls_server

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host in ("api.pinned.test", "other.pinned.test") else []

    guard = EgressGuard(
        NetworkPolicy(allow_hosts=[f"api.pinned.test:{srv.port}", f"other.pinned.test:{srv.port}"]), resolver=resolver
    )
    client = (AiohttpClient if layer == "aiohttp" else HttpxClient)(guard, 10, client_ctx)
    try:
        r = await client.exchange("GET", f"https://api.pinned.test:{srv.port}/json", CIMultiDict(), None, 10_000, 5)
        assert r.status == 200 and b'"ok": true' in r.body.replace(b'"ok":true', b'"ok": true')
        with pytest.raises(ConnectFailed) as info:  # same IP, wrong name: refused
            await client.exchange("GET", f"https://other.pinned.test:{srv.port}/json", CIMultiDict(), None, 10_000, 5)
        assert tls_failure(info.value) is not None
    finally:
        await client.aclose()


def test_untrusted_certificate_fails_clearly_without_retries(dirs, tls_server) -> None:
    srv, _ = tls_server  # its CA is not in the system store

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    ws, st = dirs
    for transport in ("aiohttp", "httpx"):
        with Legs(
            workspace=ws,
            state_dir=st,
            resolver=resolver,
            settings={"http": {"transport": transport}},
            policy={"network": {"allow_hosts": [f"api.pinned.test:{srv.port}"]}},
        ) as legs:
            r = get(legs, f"https://api.pinned.test:{srv.port}/json")
            assert r.error.type == "failed" and "TLS verification failed for api.pinned.test" in r.error.message, r.error
            assert not r.error.retryable and r.duration_ms < 1000
    assert srv.requests == []


# -- the direct aiohttp layer: pinning of literals, no cookie jar, many callers --------------------


@pytest.mark.parametrize("layer", ["aiohttp", "httpx"])
async def test_the_connection_layer_itself_refuses_unchecked_ip_literals(layer, http_server) -> None:
    """Even called directly (past check_target), a client connects to no address the guard refused:
    aiohttp skips resolvers for what it takes for an IP literal, so the client asks the guard itself."""
    from multidict import CIMultiDict

    from agent_legs import ActionError
    from agent_legs._egress import EgressGuard
    from agent_legs._policy import NetworkPolicy
    from agent_legs.actions.http._client import AiohttpClient, HttpxClient

    guard = EgressGuard(NetworkPolicy(allow_hosts=["*"]))  # wildcard: private addresses stay refused
    client = (AiohttpClient if layer == "aiohttp" else HttpxClient)(guard, 10)
    try:
        for url in (
            http_server.url("/json"),
            f"http://2130706433:{http_server.port}/json",
            f"http://[::ffff:127.0.0.1]:{http_server.port}/json",
        ):
            with pytest.raises(ActionError, match=r"loopback|private"):
                await client.exchange("GET", url, CIMultiDict(), None, 10_000, 5)
    finally:
        await client.aclose()
    assert http_server.requests == []


def test_no_cookie_jar_across_calls_for_named_hosts(dirs, http_server) -> None:
    """aiohttp's default jar keeps cookies of named hosts (not of IPs): none may outlive a call."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    ws, st = dirs
    for transport in ("aiohttp", "httpx"):
        with Legs(
            workspace=ws,
            state_dir=st,
            resolver=resolver,
            settings={"http": {"transport": transport}},
            policy={"network": {"allow_hosts": [f"api.pinned.test:{http_server.port}"]}},
        ) as legs:
            base = f"http://api.pinned.test:{http_server.port}"
            r = get(legs, f"{base}/set-cookie?name=sid&value=s1&to=/echo")
            assert r.ok and http_server.requests[-1].headers.get("cookie") == "sid=s1"
            assert get(legs, f"{base}/echo").ok
            assert "cookie" not in http_server.requests[-1].headers, transport
            assert legs.run("http.request", {"method": "GET", "url": f"{base}/echo"}, session="other").ok
            assert "cookie" not in http_server.requests[-1].headers, transport


def test_raw_body_gets_no_invented_content_type(legs, http_server) -> None:
    r = get(legs, http_server.url("/echo"), method="POST", body="plain")
    assert r.ok
    assert "content-type" not in http_server.requests[-1].headers
    r = get(legs, http_server.url("/echo"), method="POST", body="x", headers={"Content-Type": "text/csv"})
    assert http_server.requests[-1].headers["content-type"] == "text/csv"
    for method, body in (("POST", None), ("PUT", None), ("GET", "q"), ("HEAD", "x"), ("GET", None)):  # the policy's methods
        r = get(legs, http_server.url("/echo"), method=method, **({"body": body} if body is not None else {}))
        assert r.ok, r.output
        assert "content-type" not in http_server.requests[-1].headers, (method, body)


def test_many_concurrent_tasks_on_one_loop_share_one_client(dirs, http_server, captured_spans, read_log) -> None:
    import asyncio

    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        tracer_provider=captured_spans.provider,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    ) as legs:

        async def main() -> None:
            results = await asyncio.gather(
                *(
                    legs.arun("http.request", {"method": "GET", "url": http_server.url(f"/json?i={i}")}, call_id=f"c{i}")
                    for i in range(60)
                )
            )
            assert all(r.ok for r in results)
            assert [loop for loop in _transports(legs) if loop is not legs._runtime.loop] == [asyncio.get_running_loop()]

        asyncio.run(main())
    tools = captured_spans.by_name("execute_tool http_request")
    assert len(tools) == 60 and len(captured_spans.by_name("HTTP GET")) == 60
    ids = {s.context.span_id for s in tools}
    assert all(s.parent.span_id in ids for s in captured_spans.by_name("HTTP GET"))
    lines = [e for e in read_log() if e["action"] == "http.request"]
    assert sorted(e["call_id"] for e in lines) == sorted(f"c{i}" for i in range(60))


def test_sync_run_from_many_threads_one_span_and_line_each(dirs, http_server, captured_spans, read_log) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ws, st = dirs
    loops = set()
    with Legs(
        workspace=ws,
        state_dir=st,
        tracer_provider=captured_spans.provider,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
    ) as legs:

        def call(i: int) -> bool:
            r = legs.run("http.request", {"method": "GET", "url": http_server.url("/json")}, call_id=f"t{i}")
            loops.add((threading.get_ident(), id(legs._dispatch.thread_loop)))
            return r.ok

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(call, range(64)))
        clients = _transports(legs)
        assert len(clients) == len(loops) + 1  # one per thread's private loop, plus the runtime loop's
    assert len(captured_spans.by_name("execute_tool http_request")) == 64
    assert len(captured_spans.by_name("HTTP GET")) == 64
    assert len([e for e in read_log() if e["action"] == "http.request"]) == 64


def test_a_client_on_a_loop_closed_without_shutdown_is_dropped_quietly(dirs, http_server, caplog) -> None:
    """A caller's loop closed without ``shutdown_asyncgens`` (so our hook never ran): Legs.close()
    neither raises nor hangs, and later calls on new loops work."""
    import asyncio
    import time

    ws, st = dirs
    legs = Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}})
    loop = asyncio.new_event_loop()
    r = loop.run_until_complete(legs.arun("http.request", {"method": "GET", "url": http_server.url("/json")}))
    assert r.ok and loop in _transports(legs)
    loop.close()  # no shutdown_asyncgens: the client's closer never ran
    assert asyncio.run(legs.arun("http.request", {"method": "GET", "url": http_server.url("/json")})).ok
    assert loop not in _transports(legs)  # released when the next loop got its client, not kept till close
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(legs.arun("http.request", {"method": "GET", "url": http_server.url("/json")})).ok
    loop.close()  # this one is still registered when Legs closes
    t0 = time.monotonic()
    legs.close()
    assert time.monotonic() - t0 < 3
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records
    assert _transports(legs) == {}


def test_timeout_stops_an_inline_request_on_the_callers_loop(dirs, http_server) -> None:
    import asyncio
    import time

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:

        async def main() -> tuple[object, float]:
            t0 = time.monotonic()
            r = await legs.arun("http.request", {"method": "GET", "url": http_server.url("/slow?s=5"), "timeout_s": 0.3})
            return r, time.monotonic() - t0

        r, took = asyncio.run(main())
        assert r.error.type == "timeout" and took < 1.5  # type: ignore[attr-defined]


def test_default_provider_records_no_spans_but_keeps_ids(dirs, http_server, read_log, monkeypatch) -> None:
    """Without an exporter nothing reads spans: they are not recorded, yet results and log lines
    still carry valid, matching trace and span ids."""
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:
        r = get(legs, http_server.url("/json"))
    assert r.ok and len(r.trace_id or "") == 32 and len(r.span_id or "") == 16 and int(r.trace_id, 16)
    line = read_log()[-1]
    assert (line["trace_id"], line["span_id"]) == (r.trace_id, r.span_id)


def test_short_lived_threads_leave_no_loops_or_clients_behind(dirs, http_server, caplog) -> None:
    """Sync run() from threads that come and go: each ended thread's private loop and HTTP client
    are shut down by the next thread's first call, not kept until Legs.close()."""
    import threading

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:
        ok: list[bool] = []

        def call() -> None:
            ok.append(legs.run("http.request", {"method": "GET", "url": http_server.url("/json")}).ok)

        for _ in range(12):
            t = threading.Thread(target=call)
            t.start()
            t.join()
        assert ok == [True] * 12
        assert len(legs._dispatch.private_loops) <= 2  # the last thread's (and at most one not yet reaped)
        assert len(_transports(legs)) <= 3  # those, plus the runtime loop's
    _no_leaks(caplog)


def test_a_connection_cut_mid_body_is_a_clean_failure(legs, http_server) -> None:
    @http_server.route("/cut")
    def cut(h, r) -> None:  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"only part")
        h.wfile.flush()
        h.close_connection = True

    r = get(legs, http_server.url("/cut"))
    assert not r.ok and r.error.type == "failed" and "internal error" not in r.error.message, r.output
    assert r.error.retryable


def test_guard_remembers_only_passes() -> None:
    from agent_legs import ActionError
    from agent_legs._egress import EgressGuard
    from agent_legs._policy import NetworkPolicy

    guard = EgressGuard(NetworkPolicy(allow_hosts=["api.example.com", "*"]))
    ok = "https://api.example.com/v1/x?page=2"
    assert guard.check_target(ok) is guard.check_target(ok)
    for url in ("http://127.0.0.1/", "http://2130706433/", "http://[::ffff:169.254.169.254]/", "ftp://api.example.com/"):
        for _ in range(2):  # a refusal is never remembered as anything else
            with pytest.raises(ActionError):
                guard.check_target(url)
    assert set(guard._targets) == {ok}


# -- issue 13.9: only harmless headers cross origins ------------------------------------------------

CUSTOM_CREDENTIALS = {
    "X-Functions-Key": "fk-1",
    "Ocp-Apim-Subscription-Key": "apim-1",
    "X-Access-Key": "ak-1",
    "Bearer": "b-1",
    "X-Custom-Thing": "c-1",
    "Private-Token": "pt-1",
    "X-Goog-Api-Key": "g-1",
}
HARMLESS = {"Accept": "application/json", "Accept-Language": "fr", "Cache-Control": "no-cache"}


@pytest.mark.parametrize("status", [302, 307])
def test_only_allow_listed_headers_cross_origins(legs, http_server, second_http_server, status) -> None:
    target = second_http_server.url("/echo")
    r = legs.run(
        "http.request",
        {
            "method": "POST",
            "url": http_server.url(f"/redirect?to={target}&status={status}"),
            "json": {"a": 1},
            "headers": {**CUSTOM_CREDENTIALS, **HARMLESS},
        },
    )
    assert r.ok, r.output
    first, hop = http_server.requests[-1].headers, second_http_server.requests[-1].headers
    assert all(first[k.lower()] == v for k, v in CUSTOM_CREDENTIALS.items())  # the origin got them all
    assert not {k.lower() for k in CUSTOM_CREDENTIALS} & set(hop), hop
    assert all(hop[k.lower()] == v for k, v in HARMLESS.items()) and hop["user-agent"].startswith("agent-legs/")
    if status == 307:  # the body goes on, and its type with it
        assert hop["content-type"] == "application/json" and second_http_server.requests[-1].body == b'{"a": 1}'
    else:  # POST -> GET: no body, no Content-Type
        assert "content-type" not in hop and second_http_server.requests[-1].method == "GET"


def test_custom_headers_stay_on_a_same_origin_redirect(legs, http_server) -> None:
    r = get(legs, http_server.url("/redirect?to=/echo"), headers=CUSTOM_CREDENTIALS)
    assert r.ok and all(http_server.requests[-1].headers[k.lower()] == v for k, v in CUSTOM_CREDENTIALS.items())


# -- issue 13.10: configured credentials only over TLS (or loopback, or allow_http) ------------------


def _named_legs(dirs, ports, *, allow_http=False, transport="aiohttp") -> Legs:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "api.pinned.test" else []

    ws, st = dirs
    entry = {"hosts": ["api.pinned.test"], "headers": {"X-Api-Key": "{secret:API_TOKEN}"}}
    if allow_http:
        entry["allow_http"] = True
    return Legs(
        workspace=ws,
        state_dir=st,
        resolver=resolver,
        secrets={"API_TOKEN": TOKEN},
        policy={"network": {"allow_hosts": [f"api.pinned.test:{p}" for p in ports]}},
        settings={"http": {"transport": transport, "auth": [entry]}},
    )


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_configured_credentials_are_refused_over_plain_http(dirs, http_server, transport) -> None:
    with _named_legs(dirs, [http_server.port], transport=transport) as legs:
        r = get(legs, f"http://api.pinned.test:{http_server.port}/echo")
    assert r.error.type == "denied" and not r.error.retryable
    assert "settings.http.auth[0].allow_http" in r.error.message and "only over https" in r.error.message
    assert TOKEN not in r.output
    assert http_server.requests == []  # nothing was sent, with or without the credential


def test_allow_http_sends_them_and_loopback_needs_no_opt_in(dirs, http_server) -> None:
    with _named_legs(dirs, [http_server.port], allow_http=True) as legs:
        assert get(legs, f"http://api.pinned.test:{http_server.port}/echo").ok
    assert http_server.requests[-1].headers["x-api-key"] == TOKEN
    ws, st = dirs
    for host in ("127.0.0.1", "localhost"):
        with Legs(
            workspace=ws,
            state_dir=st,
            secrets={"API_TOKEN": TOKEN},
            policy={"network": {"allow_hosts": [f"{host}:{http_server.port}"]}},
            settings={"http": {"auth": [{"hosts": [host], "headers": {"X-Api-Key": "{secret:API_TOKEN}"}}]}},
        ) as legs:
            r = get(legs, f"http://{host}:{http_server.port}/echo")
        assert r.ok, r.output
        assert http_server.requests[-1].headers["x-api-key"] == TOKEN


@pytest.mark.parametrize(
    ("rule", "url_host"),
    [
        ("API.Pinned.Test.", "api.pinned.test"),  # case and a trailing dot
        ("api.pinned.test.:{port}", "API.PINNED.TEST"),
        ("bücher.pinned.test", "xn--bcher-kva.pinned.test"),  # IDNA, either way round
        ("xn--bcher-kva.pinned.test", "bücher.pinned.test"),
        ("2130706433", "127.0.0.1"),  # numeric IPv4 spellings
        ("0x7f.0.0.1:{port}", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
    ],
)
def test_an_auth_host_rule_matches_the_host_the_egress_guard_matches(dirs, http_server, rule, url_host) -> None:
    """settings.http.auth[].hosts and policy.network.allow_hosts are read by one host parser: the
    same rule text lets a URL through the guard and attaches the credentials, whatever its spelling."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host.endswith(".pinned.test") else []

    rule = rule.format(port=http_server.port)
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        resolver=resolver,
        secrets={"API_TOKEN": TOKEN},
        policy={"network": {"allow_hosts": [rule]}},
        settings={"http": {"auth": [{"hosts": [rule], "headers": {"X-Api-Key": "{secret:API_TOKEN}"}, "allow_http": True}]}},
    ) as legs:
        r = get(legs, f"http://{url_host}:{http_server.port}/echo")
    assert r.ok, r.output
    assert http_server.requests[-1].headers.get("x-api-key") == TOKEN


def test_an_auth_host_rule_on_another_port_sends_nothing(dirs, http_server) -> None:
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        secrets={"API_TOKEN": TOKEN},
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}},
        settings={"http": {"auth": [{"hosts": ["127.0.0.1:1"], "headers": {"X-Api-Key": "{secret:API_TOKEN}"}}]}},
    ) as legs:
        assert get(legs, http_server.url("/echo")).ok
    assert "x-api-key" not in http_server.requests[-1].headers


@pytest.mark.parametrize("rule", ["api.example.com:abc", "bad..name", "[::zz]"])
def test_an_unparsable_auth_host_rule_is_a_config_error(dirs, rule) -> None:
    from agent_legs import ConfigError

    ws, st = dirs
    with pytest.raises(ConfigError, match=r"settings\.http\.auth.*invalid host rule"):
        Legs(workspace=ws, state_dir=st, settings={"http": {"auth": [{"hosts": [rule], "headers": {}}]}})


def test_a_redirect_from_https_down_to_http_is_refused_before_sending(dirs, tls_server, http_server, monkeypatch):
    from agent_legs.actions.http._service import HttpService

    srv, client_ctx = tls_server
    original = HttpService.new_client
    monkeypatch.setattr(HttpService, "new_client", lambda self, ssl_context=None: original(self, client_ctx))
    down = f"http://api.pinned.test:{http_server.port}/echo"
    with _named_legs(dirs, [srv.port, http_server.port]) as legs:
        ok = get(legs, f"https://api.pinned.test:{srv.port}/echo")
        assert ok.ok and srv.requests[-1].headers["x-api-key"] == TOKEN  # over https: sent
        r = get(legs, f"https://api.pinned.test:{srv.port}/redirect?to={down}")
    assert r.error.type == "denied" and f"redirect to {down} refused" in r.error.message, r.error
    assert "settings.http.auth[0].allow_http" in r.error.message
    assert r.data["redirects"][0]["to"] == down
    assert http_server.requests == []


# -- issue 22.3: honest retry advice; 22.4: the timeout bounds the whole call -----------------------


def test_a_post_whose_response_never_came_is_not_retryable(legs, http_server) -> None:
    # 2 s for the request to reach the server even on a loaded machine; the server answers after 6
    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/slow?s=6"), "body": "x", "timeout_s": 2.0})
    assert http_server.requests[-1].method == "POST"  # the server got it (and may have acted)
    assert r.error.type == "timeout" and not r.error.retryable, r.error
    assert "may have reached the server and taken effect" in r.error.message
    assert "check whether it took effect" in r.error.hint


def test_a_post_cut_mid_response_is_not_retryable_but_a_get_is(legs, http_server) -> None:
    @http_server.route("/cut")
    def cut(h, r) -> None:  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"only part")
        h.wfile.flush()
        h.close_connection = True

    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/cut"), "body": "x"})
    assert r.error.type == "failed" and not r.error.retryable and "outcome is unknown" in r.error.message
    assert get(legs, http_server.url("/cut")).error.retryable


def test_a_get_after_a_post_redirect_that_times_out_is_not_retryable(legs, http_server) -> None:
    r = legs.run(
        "http.request",
        {"method": "POST", "url": http_server.url("/redirect?to=/slow%3Fs%3D6&status=303"), "body": "x", "timeout_s": 2.5},
    )
    assert [q.method for q in http_server.requests[-2:]] == ["POST", "GET"]
    assert r.error.type == "timeout" and not r.error.retryable and "may have reached" in r.error.message


def test_a_post_that_cannot_connect_stays_retryable(dirs) -> None:
    port = free_port()  # nobody listens there: connection refused
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{port}"]}}) as legs:
        r = legs.run("http.request", {"method": "POST", "url": f"http://127.0.0.1:{port}/", "body": "x"})
    assert r.error.type == "unavailable" and r.error.retryable  # nothing was sent


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("case", ["redirect-chain", "retries"])
def test_the_timeout_bounds_the_whole_call(dirs, http_server, case, transport) -> None:
    """A server that stalls 0.6 s on every hop: an endless redirect chain, or 503s with
    Retry-After 1 and many retries allowed. timeout_s = 2 ends the call, not each hop."""
    import time

    hops = []

    @http_server.route("/stall")
    def stall(h, rec) -> None:  # type: ignore[no-untyped-def]
        hops.append(time.monotonic())
        time.sleep(0.6)
        if case == "redirect-chain":
            h.redirect(f"/stall?n={len(hops)}", 307)
        else:
            h.send_body(503, b"busy", headers={"Retry-After": "1"})

    @http_server.route("/ready")
    def ready(h, rec) -> None:  # type: ignore[no-untyped-def]
        h.send_body(200, b"ok")

    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}, "http": {"max_redirects": 50}},
        settings={"http": {"retries": 50, "transport": transport}},
    ) as legs:
        # The service started and its client made first: the call's deadline starts when its handler does,
        # after those (imports that take a second on a loaded machine when this test runs first).
        assert get(legs, http_server.url("/ready")).ok
        t0 = time.monotonic()
        r = get(legs, http_server.url("/stall"), timeout_s=2)
        elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed  # 2 s and scheduling slack; per-hop deadlines would be 30 s and more
    assert all(t - t0 < 2.1 for t in hops), [t - t0 for t in hops]  # no hop started after the deadline
    if case == "redirect-chain":
        assert r.error.type == "timeout" and r.error.retryable and len(hops) >= 2
    else:  # retried while time was left; then the 503, or a timeout if the last try stalled past the end
        assert len(hops) >= 2 and (r.error.type == "timeout" if r.error else r.data["status"] == 503), r.output


def test_requests_in_flight_hold_no_timer_of_their_own(dirs, http_server) -> None:
    """The handler's deadline is an entry of the loop's watchdog, like the pipeline's: 50 requests in
    flight on one loop hold at most one timer between them (asyncio.timeout gave each its own, 50 here),
    and the deadline still stops a request (and only it) with the handler's own timeout error."""
    import asyncio
    import threading

    gate = threading.Event()

    @http_server.route("/held")
    def held(h, r):
        gate.wait(30)
        h.send_body(200, b"done", "text/plain")

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}}) as legs:

        async def main() -> None:
            assert (await legs.arun("http.request", {"method": "GET", "url": http_server.url("/1kb")})).ok
            loop = asyncio.get_running_loop()
            before = len(loop._scheduled)  # type: ignore[attr-defined]
            seen = len(http_server.requests)
            calls = [
                asyncio.ensure_future(legs.arun("http.request", {"method": "GET", "url": http_server.url("/held")}))
                for _ in range(50)
            ]
            while len(http_server.requests) - seen < 50:
                await asyncio.sleep(0.005)
            assert not any(c.done() for c in calls)
            assert len(loop._scheduled) - before <= 1  # type: ignore[attr-defined]
            short = await legs.arun(
                "http.request", {"method": "POST", "url": http_server.url("/held"), "body": "x", "timeout_s": 0.3}
            )
            assert short.error is not None and short.error.type == "timeout" and not short.error.retryable
            assert "no complete response within 0.3 s" in short.error.message  # the handler's, not the pipeline's
            assert not any(c.done() for c in calls)  # the others run on, uncancelled
            gate.set()
            assert all(r.ok and r.output.endswith("done") for r in await asyncio.gather(*calls))

        asyncio.run(main())
