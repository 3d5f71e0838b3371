"""The egress proxy polices every request a client sends through it (real sockets on loopback).

The client side is h11 (an independent HTTP/1.1 implementation), so a framing mistake of the proxy
shows up as a protocol error here rather than being hidden by a matching mistake in the test.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
from typing import Any

import h11
import pytest

from agent_legs._egress import EgressGuard
from agent_legs._egress_proxy import DENIED_HEADER, EgressProxy, loopback_peer_uid, peer_uid_supported
from agent_legs._policy import NetworkPolicy


class H11Client:
    """One kept-alive client connection to the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> H11Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("Host", "x"), *(headers or [])]
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        self.writer.write(self.conn.send(h11.Request(method=method, target=url, headers=hdrs)))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status, resp_headers, chunks = 0, {}, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await asyncio.wait_for(self.reader.read(65536), 10))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, resp_headers, b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def env(http_server, second_http_server) -> Any:
    guard = EgressGuard(NetworkPolicy(allow_hosts=[f"127.0.0.1:{http_server.port}"]))
    proxy = await EgressProxy(guard).start()
    yield proxy, http_server, second_http_server
    await proxy.aclose()


async def _raw(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_allowed_requests_share_one_kept_alive_connection(env) -> None:
    proxy, allowed, _ = env
    client = await H11Client.open(proxy.port)
    for _ in range(3):
        status, headers, body = await client.request("GET", allowed.url("/json"))
        assert status == 200 and b'"alpha"' in body and headers["connection"] == "keep-alive"
    client.close()
    assert [r.path for r in allowed.requests] == ["/json"] * 3 and proxy.checked == 3


async def test_denied_plain_http_gets_403_with_rule(env) -> None:
    proxy, _, internal = env
    client = await H11Client.open(proxy.port)
    status, headers, body = await client.request("GET", internal.url("/secret"))
    assert status == 403 and headers[DENIED_HEADER.lower()] == "policy.network.allow_hosts (host not listed)"
    assert b"Blocked by Agent Legs" in body and internal.requests == []
    assert proxy.take_denied()[0].url == internal.url("/secret") and proxy.denied == []


async def test_every_request_on_a_kept_alive_connection_is_checked(env) -> None:
    proxy, allowed, internal = env
    client = await H11Client.open(proxy.port)
    assert (await client.request("GET", allowed.url("/json")))[0] == 200
    assert (await client.request("GET", internal.url("/secret")))[0] == 403
    client.close()
    assert internal.requests == [] and proxy.checked == 2 and len(proxy.denied) == 1


async def test_pipelined_second_request_to_another_host_is_refused(env) -> None:
    proxy, allowed, internal = env
    data = await _raw(
        proxy.port,
        (
            f"GET {allowed.url('/json')} HTTP/1.1\r\nHost: x\r\n\r\nGET {internal.url('/secret')} HTTP/1.1\r\nHost: y\r\n\r\n"
        ).encode(),
    )
    assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 403" in data
    assert internal.requests == [] and proxy.checked == 2


async def test_host_header_comes_from_the_checked_url(env) -> None:
    proxy, allowed, _ = env
    client = await H11Client.open(proxy.port)
    await client.request("GET", allowed.url("/echo"), [("X-Forwarded-Host", "ok")])
    # h11 sent "Host: x"; the upstream must see the checked authority (no domain fronting)
    assert allowed.requests[-1].headers["host"] == f"127.0.0.1:{allowed.port}"
    assert "proxy-connection" not in allowed.requests[-1].headers


async def _h11_echo_server() -> tuple[asyncio.AbstractServer, int]:
    """A server that understands every request framing (h11) and echoes the body it received."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    break
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                writer.write(conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))])))
                writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                await writer.drain()
                conn.start_next_cycle()
                body = b""
            elif isinstance(event, h11.ConnectionClosed):
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_request_bodies_fixed_and_chunked() -> None:
    server, port = await _h11_echo_server()
    proxy = await EgressProxy(EgressGuard(NetworkPolicy(allow_hosts=[f"127.0.0.1:{port}"]))).start()
    try:
        client = await H11Client.open(proxy.port)
        url = f"http://127.0.0.1:{port}/"
        assert (await client.request("POST", url, body=b"a" * 300_000))[2] == b"a" * 300_000
        status, _, body = await client.request("POST", url, [("Transfer-Encoding", "chunked")], body=b"hello" * 1000)
        assert status == 200 and body == b"hello" * 1000
        assert (await client.request("GET", url))[2] == b""  # the connection is still in step
        client.close()
    finally:
        await proxy.aclose()
        server.close()


@pytest.mark.parametrize(
    "head",
    [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",  # CL.TE smuggling
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked, identity",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: -1",
        "X-A: 1\r\n folded",
        "Bad Name: 1",
    ],
)
async def test_ambiguous_framing_is_refused(env, head) -> None:
    proxy, allowed, _ = env
    data = await _raw(proxy.port, f"POST {allowed.url('/echo')} HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\nhello".encode())
    assert data.startswith(b"HTTP/1.1 400") and allowed.requests == []


async def test_response_framings_keep_the_connection_in_step(env) -> None:
    proxy, allowed, _ = env

    @allowed.route("/chunked")
    def chunked(h, r) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.write(b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n")

    @allowed.route("/not-modified")
    def not_modified(h, r) -> None:
        h.send_response(304)
        h.send_header("Content-Length", "1000")  # describes the cached entity, no body follows
        h.end_headers()

    client = await H11Client.open(proxy.port)
    assert (await client.request("GET", allowed.url("/chunked")))[2] == b"abcdefg"
    status, headers, body = await client.request("HEAD", allowed.url("/json"))
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert (await client.request("GET", allowed.url("/not-modified")))[0] == 304
    assert b'"alpha"' in (await client.request("GET", allowed.url("/json")))[2]
    client.close()


async def test_close_delimited_response_closes_the_client(env) -> None:
    proxy, allowed, _ = env

    @allowed.route("/legacy")
    def legacy(h, r) -> None:
        h.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
        h.close_connection = True

    client = await H11Client.open(proxy.port)
    status, headers, body = await client.request("GET", allowed.url("/legacy"))
    assert status == 200 and body == b"until close" and headers["connection"] == "close"


async def test_upstream_that_closes_is_reopened(env) -> None:
    proxy, allowed, _ = env

    @allowed.route("/bye")
    def bye(h, r) -> None:
        h.send_body(200, b"bye", "text/plain", {"Connection": "close"})
        h.close_connection = True

    client = await H11Client.open(proxy.port)
    assert (await client.request("GET", allowed.url("/bye")))[2] == b"bye"
    assert b'"alpha"' in (await client.request("GET", allowed.url("/json")))[2]


async def test_expect_continue_is_answered(env) -> None:
    proxy, allowed, _ = env
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        f"POST {allowed.url('/echo')} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        f"Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100")
    writer.write(b"hi")
    assert b'"body": "hi"' in await asyncio.wait_for(reader.read(), 10)
    writer.close()


async def test_upgrade_is_checked_then_relayed() -> None:
    async def ws_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Upgrade: websocket" in head
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while data := await reader.read(100):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(ws_like, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await EgressProxy(EgressGuard(NetworkPolicy(allow_hosts=[f"127.0.0.1:{port}"]))).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            f"GET http://127.0.0.1:{port}/sock HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"PING"
        writer.close()
    finally:
        await proxy.aclose()
        server.close()


async def test_connect_is_checked(env) -> None:
    proxy, allowed, internal = env
    denied = await _raw(proxy.port, f"CONNECT 127.0.0.1:{internal.port} HTTP/1.1\r\n\r\n".encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"CONNECT 127.0.0.1:{allowed.port} HTTP/1.1\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # through the tunnel
    await writer.drain()
    assert b'"alpha"' in await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert denied.startswith(b"HTTP/1.1 403") and internal.requests == []
    assert proxy.denied[0].url == f"https://127.0.0.1:{internal.port}"


async def test_connect_needs_a_tunnel_scheme(http_server) -> None:
    guard = EgressGuard(NetworkPolicy(allow_hosts=[f"127.0.0.1:{http_server.port}"], schemes=["http"]))
    proxy = await EgressProxy(guard).start()
    try:
        data = await _raw(proxy.port, f"CONNECT 127.0.0.1:{http_server.port} HTTP/1.1\r\n\r\n".encode())
    finally:
        await proxy.aclose()
    assert data.startswith(b"HTTP/1.1 403") and b"policy.network.schemes" in data and http_server.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "169.254.169.254:80",
        "localhost:22",
        "[::1]:80",
        "0.0.0.0:80",
        "10.0.0.1:443",
        "127.0.0.1:notaport",
        ":443",
        "2130706433:80",
    ],
)
async def test_connect_to_special_addresses_denied(env, target) -> None:
    proxy, _, _ = env
    data = await _raw(proxy.port, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:22/",
        "http://0x7f000001:22/",
        "http://user:pw@example.com/",
        "ftp://example.com/",
    ],
)
async def test_plain_requests_to_special_targets_denied(env, url) -> None:
    proxy, _, _ = env
    data = await _raw(proxy.port, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert data.startswith((b"HTTP/1.1 403", b"HTTP/1.1 400"))


async def test_origin_form_requests_are_refused(env) -> None:
    proxy, allowed, _ = env
    data = await _raw(proxy.port, f"GET /json HTTP/1.1\r\nHost: 127.0.0.1:{allowed.port}\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 400") and allowed.requests == []


async def test_proxy_overhead_is_under_half_a_millisecond() -> None:
    """Median added latency per kept-alive request, against a fast in-process server."""
    body = b"x" * 1024

    async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with __import__("contextlib").suppress(Exception):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + body)

    server = await asyncio.start_server(fast, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await EgressProxy(EgressGuard(NetworkPolicy(allow_hosts=[f"127.0.0.1:{port}"]))).start()
    try:

        async def timed(client_port: int, target: str) -> list[float]:
            reader, writer = await asyncio.open_connection("127.0.0.1", client_port)
            out = []
            for _ in range(400):
                t = time.perf_counter()
                writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(1024)
                out.append(time.perf_counter() - t)
            writer.close()
            return out[50:]

        direct, proxied = [], []
        for _ in range(3):  # alternate so load on the machine hits both alike
            direct += await timed(port, "/")
            proxied += await timed(proxy.port, f"http://127.0.0.1:{port}/")
    finally:
        await proxy.aclose()
        server.close()
    overhead_ms = (statistics.median(proxied) - statistics.median(direct)) * 1000
    print(f"proxy overhead p50: {overhead_ms:.3f} ms")
    assert overhead_ms < 0.5


async def test_denied_list_is_bounded(env) -> None:
    proxy, _, internal = env
    for _ in range(3):
        await _raw(proxy.port, f"GET {internal.url('/x')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert len(proxy.denied) == 3
    from agent_legs import _egress_proxy

    proxy.denied = [proxy.denied[0]] * _egress_proxy._MAX_DENIED
    await _raw(proxy.port, f"GET {internal.url('/x')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert len(proxy.denied) == _egress_proxy._MAX_DENIED


async def test_close_ends_open_tunnels(env) -> None:
    proxy, allowed, _ = env
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"CONNECT 127.0.0.1:{allowed.port} HTTP/1.1\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    await proxy.aclose()
    assert await asyncio.wait_for(reader.read(), 5) == b"" and not proxy._tasks


# -- who is on the other end (the local browser's proxy serves only its own user) ----------------------
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_loopback_peer_uid_finds_the_user_of_a_connection(family: int, host: str) -> None:
    assert peer_uid_supported(), "netlink sock_diag is unavailable: the local browser's proxy falls back to credentials"
    with socket.create_server((host, 0), family=family) as server, socket.create_connection(server.getsockname()[:2]) as client:
        accepted, peer = server.accept()
        with accepted:
            ours = accepted.getsockname()[:2]
            assert loopback_peer_uid(peer[:2], ours) == os.getuid()
            assert client.getsockname()[:2] == peer[:2]
            assert loopback_peer_uid((host, 1), ours) is None  # no such socket: unknown, so refused
