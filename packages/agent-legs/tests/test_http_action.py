"""http.request against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from agent_legs import Legs

TOKEN = "tok-very-secret-123"


@pytest.fixture(params=["aiohttp", "httpx"])
def legs(request, dirs, http_server, second_http_server, captured_spans):
    """Every test runs on both connection layers (each pinned to guard-checked addresses)."""
    ws, st = dirs
    a, b = http_server, second_http_server
    with Legs(
        workspace=ws, state_dir=st, secrets={"API_TOKEN": TOKEN},
        policy={"network": {"allow_hosts": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]},
                "http": {"max_response_bytes": 100_000, "methods": ["GET", "HEAD", "POST", "PUT"]}},
        settings={"http": {"transport": request.param,
                           "auth": [{"hosts": [f"127.0.0.1:{a.port}"],
                                     "headers": {"Authorization": "Bearer {secret:API_TOKEN}"}}]}},
        tracer_provider=captured_spans.provider,
    ) as legs:
        yield legs


def get(legs, url, **kw):
    return legs.run("http.request", {"method": kw.pop("method", "GET"), "url": url, **kw})


def test_json_is_pretty_and_structured(legs, http_server) -> None:
    r = get(legs, http_server.url("/json"))
    assert r.ok and r.data["status"] == 200 and r.data["json"]["items"][1]["name"] == "beta"
    assert '"name": "alpha"' in r.output and r.output.startswith("HTTP 200 OK")


def test_html_becomes_markdown(legs, http_server) -> None:
    r = get(legs, http_server.url("/html"))
    assert "# Hello" in r.output and "**bold**" in r.output and "[a link](/json)" in r.output
    assert "var x" not in r.output


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
    r = get(legs, http_server.url(f"/redirect?to={target}"), headers={"Authorization": "Basic dXNlcjpwdw==",
                                                                      "X-Trace": "1"})
    assert r.ok and r.data["redirects"][0]["to"] == target
    hop = second_http_server.requests[-1].headers
    assert "authorization" not in hop and hop["x-trace"] == "1"


def test_redirect_303_turns_post_into_get(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "POST", "url": http_server.url("/redirect?to=/echo&status=303"),
                                  "json": {"x": 1}})
    assert r.ok and http_server.requests[-1].method == "GET" and http_server.requests[-1].body == b""


def test_redirect_307_keeps_method_and_body(legs, http_server) -> None:
    legs.run("http.request", {"method": "POST", "url": http_server.url("/redirect?to=/echo&status=307"), "body": "b"})
    assert http_server.requests[-1].method == "POST" and http_server.requests[-1].body == b"b"


def test_redirect_limit(dirs, http_server) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]},
                                                  "http": {"max_redirects": 2}}) as legs:
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
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"network": {"allow_hosts": [f"127.0.0.1:{port}"]}},
              settings={"http": {"retries": 0}}) as legs:
        r = get(legs, f"http://127.0.0.1:{port}/")
        assert r.error.type == "unavailable" and r.error.retryable


def test_method_policy(legs, http_server) -> None:
    r = legs.run("http.request", {"method": "DELETE", "url": http_server.url("/echo")})
    assert r.error.type == "denied" and "policy.http.methods" in r.error.message
    assert http_server.requests == []


@pytest.mark.parametrize("headers", [
    {"X-A": "v\r\nInjected: 1"}, {"X-A": "v\nx"}, {"X-A": "v\x00"}, {"Bad Name": "v"}, {"X-A\r\nB": "v"},
    {"Host": "evil.com"}, {"Transfer-Encoding": "chunked"}, {"Content-Length": "0"},
])
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
