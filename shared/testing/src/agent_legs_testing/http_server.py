"""A real HTTP server on 127.0.0.1 for tests: JSON, HTML, redirects, slow and big responses.

Routes: ``/echo`` (the request as JSON), ``/json``, ``/html``, ``/1kb``, ``/big?size=N``,
``/slow?s=S``, ``/drip?chunks=N&every=S`` (body trickles in), ``/redirect?to=URL&status=302``,
``/status?code=N``, ``/binary``, ``/gzip``, ``/set-cookie?name=&value=&to=URL`` (sets a cookie, then
redirects). Add more per test with ``@server.route("/path")``.

``TestServer.requests`` records every request received (method, path, headers, body), so tests
can assert what reached the network, and that nothing did.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


Route = Callable[["Handler", Received], None]


@dataclass
class TestServer:
    __test__ = False
    host: str
    port: int
    requests: list[Received] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str) -> Callable[[Route], Route]:
        def deco(fn: Route) -> Route:
            self.routes[path] = fn
            return fn

        return deco


class Handler(BaseHTTPRequestHandler):
    server_version = "AgentLegsTest/1.0"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    protocol_version = "HTTP/1.1"
    srv: TestServer

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        rec = Received(self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body)
        self.srv.requests.append(rec)
        route = self.srv.routes.get(parts.path) or _DEFAULT_ROUTES.get(parts.path)
        if route is None:
            self.send_body(404, b"not found", "text/plain")
            return
        route(self, rec)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def send_body(self, status: int, body: bytes, ctype: str = "text/plain", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(obj).encode(), "application/json", headers)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_body(status, b"", "text/plain", {"Location": location})


def _echo(h: Handler, r: Received) -> None:
    h.send_json(
        200,
        {"method": r.method, "path": r.path, "query": r.query, "headers": r.headers, "body": r.body.decode("utf-8", "replace")},
    )


def _json(h: Handler, r: Received) -> None:
    h.send_json(200, {"items": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "beta"}], "ok": True})


def _html(h: Handler, r: Received) -> None:
    h.send_body(
        200,
        b"<html><head><title>T</title><script>var x=1;</script></head><body><h1>Hello</h1>"
        b"<p>Some <b>bold</b> text and <a href='/json'>a link</a>.</p></body></html>",
        "text/html; charset=utf-8",
    )


def _kb(h: Handler, r: Received) -> None:
    h.send_body(200, b"x" * 1024, "text/plain")


def _big(h: Handler, r: Received) -> None:
    size = int(r.query.get("size", ["5000000"])[0])
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(size))
    h.end_headers()
    chunk = b"y" * 65536
    sent = 0
    try:
        while sent < size:
            n = min(len(chunk), size - sent)
            h.wfile.write(chunk[:n])
            sent += n
    except (BrokenPipeError, ConnectionResetError):
        pass


def _slow(h: Handler, r: Received) -> None:
    time.sleep(float(r.query.get("s", ["5"])[0]))
    h.send_body(200, b"slow done")


def _redirect(h: Handler, r: Received) -> None:
    h.redirect(r.query["to"][0], int(r.query.get("status", ["302"])[0]))


def _status(h: Handler, r: Received) -> None:
    h.send_body(int(r.query["code"][0]), b"status body")


def _binary(h: Handler, r: Received) -> None:
    h.send_body(200, bytes(range(256)) * 4, "application/octet-stream")


def _drip(h: Handler, r: Received) -> None:
    chunks = int(r.query.get("chunks", ["20"])[0])
    every = float(r.query.get("every", ["0.2"])[0])
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(chunks))
    h.end_headers()
    try:
        for _ in range(chunks):
            h.wfile.write(b"d")
            h.wfile.flush()
            time.sleep(every)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _gzip(h: Handler, r: Received) -> None:
    import gzip

    h.send_body(200, gzip.compress(json.dumps({"compressed": True}).encode()), "application/json", {"Content-Encoding": "gzip"})


def _set_cookie(h: Handler, r: Received) -> None:
    name, value = r.query.get("name", ["sid"])[0], r.query.get("value", ["abc"])[0]
    h.send_body(302, b"", "text/plain", {"Set-Cookie": f"{name}={value}; Path=/", "Location": r.query["to"][0]})


_DEFAULT_ROUTES: dict[str, Route] = {
    "/echo": _echo,
    "/json": _json,
    "/html": _html,
    "/1kb": _kb,
    "/big": _big,
    "/slow": _slow,
    "/redirect": _redirect,
    "/status": _status,
    "/binary": _binary,
    "/drip": _drip,
    "/gzip": _gzip,
    "/set-cookie": _set_cookie,
}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that stop reading (response caps, timeouts) are expected here


def start_server(host: str = "127.0.0.1") -> tuple[TestServer, ThreadingHTTPServer]:
    srv = TestServer(host, 0)
    handler = type("BoundHandler", (Handler,), {"srv": srv})
    httpd = _QuietServer((host, 0), handler)
    httpd.daemon_threads = True
    srv.port = httpd.server_address[1]
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"test-http-{srv.port}"
    ).start()
    return srv, httpd


@pytest.fixture
def http_server() -> Iterator[TestServer]:
    srv, httpd = start_server()
    yield srv
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def second_http_server() -> Iterator[TestServer]:
    """Another loopback server: the 'internal service' an SSRF would try to reach."""
    srv, httpd = start_server()
    yield srv
    httpd.shutdown()
    httpd.server_close()
