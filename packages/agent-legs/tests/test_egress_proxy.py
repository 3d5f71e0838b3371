"""The egress proxy polices every request a client sends through it (real sockets on loopback)."""

from __future__ import annotations

import asyncio

import pytest

from agent_legs._egress import EgressGuard
from agent_legs._egress_proxy import DENIED_HEADER, EgressProxy
from agent_legs._policy import NetworkPolicy


@pytest.fixture
def proxy_env(http_server, second_http_server):
    guard = EgressGuard(NetworkPolicy(allow_hosts=[f"127.0.0.1:{http_server.port}"]))
    return guard, http_server, second_http_server


async def _exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_allowed_plain_http_goes_through(proxy_env) -> None:
    guard, allowed, _ = proxy_env
    proxy = await EgressProxy(guard).start()
    try:
        data = await _exchange(proxy.port, f"GET {allowed.url('/json')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    finally:
        await proxy.aclose()
    assert data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200")
    assert b'"alpha"' in data and allowed.requests[-1].path == "/json"


async def test_denied_plain_http_gets_403_with_rule(proxy_env) -> None:
    guard, _, internal = proxy_env
    proxy = await EgressProxy(guard).start()
    try:
        data = await _exchange(proxy.port, f"GET {internal.url('/secret')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    finally:
        await proxy.aclose()
    assert data.startswith(b"HTTP/1.1 403") and DENIED_HEADER.encode() in data
    assert internal.requests == [] and proxy.denied[0].rule == "policy.network.allow_hosts (host not listed)"


async def test_connect_is_checked(proxy_env) -> None:
    guard, allowed, internal = proxy_env
    proxy = await EgressProxy(guard).start()
    try:
        denied = await _exchange(proxy.port, f"CONNECT 127.0.0.1:{internal.port} HTTP/1.1\r\n\r\n".encode())
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"CONNECT 127.0.0.1:{allowed.port} HTTP/1.1\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # through the tunnel
        await writer.drain()
        assert b'"alpha"' in await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await proxy.aclose()
    assert denied.startswith(b"HTTP/1.1 403") and internal.requests == []


async def test_second_request_on_kept_alive_connection_cannot_reach_another_host(proxy_env) -> None:
    guard, allowed, internal = proxy_env
    proxy = await EgressProxy(guard).start()
    try:
        await _exchange(proxy.port, (f"GET {allowed.url('/json')} HTTP/1.1\r\nHost: x\r\n\r\n"
                                     f"GET {internal.url('/secret')} HTTP/1.1\r\nHost: y\r\n\r\n").encode())
    finally:
        await proxy.aclose()
    assert internal.requests == []


@pytest.mark.parametrize("target", ["169.254.169.254:80", "localhost:22", "[::1]:80", "0.0.0.0:80", "10.0.0.1:443"])
async def test_connect_to_special_addresses_denied(proxy_env, target) -> None:
    guard, _, _ = proxy_env
    proxy = await EgressProxy(guard).start()
    try:
        data = await _exchange(proxy.port, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    finally:
        await proxy.aclose()
    assert data.startswith(b"HTTP/1.1 403")
