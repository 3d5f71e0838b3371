"""The http family's connection layers, pinned to the addresses the egress guard checked.

Two layers behind one interface (``Client.exchange``: one request, the body read up to a cap, the
connection released): aiohttp driven directly (the default: no httpx objects on the hot path, they cost
more than the exchange itself on a local API) and httpx's own pool (``settings.http.transport = "httpx"``).

Invariants:

* Every new connection asks the egress guard and goes only to the addresses it checked (aiohttp: a
  resolver answering with the guard's addresses, and a guard check of what aiohttp takes for an IP
  literal, which skips resolvers; httpx: a network backend on its pool). TLS SNI and certificate
  checks stay on the host name, so DNS rebinding cannot swap the target and pinning cannot weaken TLS.
* No cookie jar, no environment proxies (``trust_env=False``), no redirects followed here (the action
  follows them one hop at a time, each re-checked).
* A body is read only up to the cap: past it reading stops (the rest never leaves the socket buffer) and
  the connection is not reused. Bounded per decoded chunk, so a compressed body cannot expand past it;
  read whole in one step only when it is not encoded and its Content-Length is within the cap (aiohttp
  reads exactly that many bytes).
* Errors come out as ``ConnectFailed`` (no connection: retryable for idempotent methods),
  ``ExchangeFailed`` (broken or malformed exchange) or ``TimeoutError``; the cause is chained.

Threat model: the model chooses URLs (hosts, IP spellings, redirects via servers it controls); the
guard's rules come from the operator. A client belongs to one event loop (see ``agent_legs._loops``).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from ..._egress import EgressGuard
from ..._errors import ActionError

__all__ = [
    "AiohttpClient",
    "Client",
    "ConnectFailed",
    "ExchangeFailed",
    "Headers",
    "HttpxClient",
    "Reply",
    "is_invalid_url",
    "parse_url",
    "tls_failure",
]


Headers = CIMultiDict[str] | CIMultiDictProxy[str]  # a request's headers: never changed by the clients
_SKIP_CONTENT_TYPE = ("Content-Type",)
_NO_TYPE_METHODS = frozenset({"GET", "HEAD"})  # aiohttp invents a Content-Type only for a body or POST/PUT/PATCH


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Every new connection goes to an address the egress guard just checked."""

    def __init__(self, guard: EgressGuard, inner: httpcore.AsyncNetworkBackend) -> None:
        self._guard = guard
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        dest = await self._guard.check_host(host, port)
        error: Exception | None = None
        for ip in dest.addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise ActionError("denied", "unix sockets are not reachable", rule="egress guard")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardResolver:
    """aiohttp resolver that answers only with addresses the egress guard has checked (pinning).

    aiohttp skips resolvers for IP literals; those are checked by ``check_target`` before each hop."""

    def __init__(self, guard: EgressGuard) -> None:
        self._guard = guard

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        import socket

        dest = await self._guard.check_host(host, port)
        return [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
            }
            for ip in dest.addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class Reply:
    """One HTTP exchange, body read (up to the cap) and the connection released."""

    status: int
    reason: str
    raw_headers: Sequence[tuple[bytes, bytes]]  # the layer's own, never copied
    body: bytes
    truncated: bool


class ConnectFailed(Exception):
    """No connection could be made (the cause is chained): retryable for idempotent methods."""


class ExchangeFailed(Exception):
    """The connection broke or the response was malformed."""


class Client:
    """A connection pool bound to one event loop, pinned to addresses the egress guard checked."""

    async def exchange(self, method: str, url: str, headers: Headers, content: bytes | None, cap: int, remaining: float) -> Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        """Release what can be released without the client's loop, which is closed (nothing can run there)."""


class AiohttpClient(Client):
    def __init__(
        self, guard: EgressGuard, limit: int, ssl_context: ssl.SSLContext | None = None, defaults: Headers | None = None
    ) -> None:
        """``defaults``: the service's fixed headers (a read-only view). A request that sends exactly them
        (the same object) leaves them to the session, which copies its own defaults per request anyway:
        what goes out is the same, without aiohttp's per-request merge of them (a set, a view, an iterator)."""
        import aiohttp

        # aiohttp asks the resolver for every new connection to a name and connects only to its
        # answers; it skips resolvers for IP literals, which _pin_literal has the guard check.
        connector = aiohttp.TCPConnector(
            limit=limit,
            resolver=_GuardResolver(guard),  # type: ignore[arg-type]
            ssl=ssl_context if ssl_context is not None else True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            headers=defaults,
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies never outlive a call (nor cross sessions)
            timeout=aiohttp.ClientTimeout(total=None),  # the caller's asyncio.timeout bounds the exchange
            auto_decompress=True,  # incremental and bounded per chunk: the cap holds for decoded bytes
        )
        self._guard = guard
        self._defaults = defaults
        self._request = self.session._request  # see exchange: the request without request()'s wrappers
        self._is_ip_address = aiohttp.helpers.is_ip_address  # looked up once, not imported per call
        self._invalid_url = aiohttp.InvalidURL
        self._errors = (aiohttp.ClientError, aiohttp.InvalidURL)
        self._connect_errors = (aiohttp.ClientConnectorError,)
        self._checked: set[tuple[str, int | None]] = set()  # (host, port) as aiohttp reads them, guard-checked

    async def _pin_literal(self, key: tuple[str, int | None]) -> None:
        """aiohttp connects to what it takes for an IP literal without asking the resolver: have the
        guard check exactly that host (whatever ``check_target``'s parser read in the URL). Awaited
        only for a (host, port) not checked yet: a known one costs no coroutine."""
        if self._is_ip_address(key[0]):
            await self._guard.check_host(key[0], key[1] or 0)  # rules and address: no DNS involved
        if len(self._checked) > 4096:
            self._checked.clear()
        self._checked.add(key)  # a pure function of host, port and the (fixed) policy

    async def exchange(self, method: str, url: str, headers: Headers, content: bytes | None, cap: int, remaining: float) -> Reply:
        try:
            try:
                parsed = yarl.URL(url)
            except ValueError as exc:
                raise self._invalid_url(url) from exc
            key = (parsed.raw_host or "", parsed.port)
            if key not in self._checked:
                await self._pin_literal(key)
            # Like httpx, a raw body (or a POST/PUT/PATCH without one) gets no invented Content-Type; a
            # bodiless GET/HEAD has none to invent, and skips aiohttp's per-request merge of the skip list.
            skip = None if content is None and method in _NO_TYPE_METHODS else _SKIP_CONTENT_TYPE
            # aiohttp's ``_request`` awaited directly, not ``request()`` in ``async with``: the same
            # request without its kwargs dict, context-manager object and four enter/exit coroutines,
            # all held across the exchange's awaits (the collector's load at 50 calls in flight). The
            # ``finally`` is what the context manager's exit does: release, then wait for a writer still running.
            response = await self._request(
                method,
                parsed,
                headers=None if headers is self._defaults else headers,  # see __init__: the session's own
                data=content,
                allow_redirects=False,
                skip_auto_headers=skip,
            )
            released = False
            try:
                length = response.content_length
                if length is not None and length <= cap and "Content-Encoding" not in response.headers:
                    # Not encoded: aiohttp reads exactly Content-Length bytes, within the cap (one read,
                    # no per-chunk loop). An encoded body is bounded per decoded chunk below.
                    body = await response.read()
                    # A read that returns has released the connection to the pool (after the request's
                    # writer finished): the ``finally``'s release would only mark this response, which
                    # nothing reads again, closed (eight calls). Not when the connection is still held.
                    released = response._connection is None
                    return Reply(response.status, response.reason or "", response.raw_headers, body, False)
                chunks, size, truncated = [], 0, False
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > cap:
                        truncated = True  # stop reading: the rest never leaves the socket buffer
                        response.close()  # and the connection is not reused
                        break
                return Reply(
                    response.status,
                    response.reason or "",
                    response.raw_headers,
                    b"".join(chunks)[:cap] if truncated else b"".join(chunks),
                    truncated,
                )
            finally:
                if not released:
                    response.release()
                    if response._writer is not None:  # else wait_for_close would only release again (a coroutine)
                        await response.wait_for_close()
        except self._connect_errors as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        except (*self._errors, OSError, ValueError) as exc:  # OSError: a socket error aiohttp did not wrap
            raise ExchangeFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.session.close()

    def abandon(self) -> None:
        connector = self.session.connector
        if connector is None:
            return
        protocols = [proto for conns in getattr(connector, "_conns", {}).values() for proto, *_ in conns]
        protocols += list(getattr(connector, "_acquired", ()))
        for proto in protocols:  # the transports cannot close on a closed loop: close their sockets
            transport = getattr(proto, "transport", None)
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
                transport._sock = None  # type: ignore[union-attr]  # closed here, not by the (dead) loop
        connector._close()  # on a closed loop it only marks the pool (and so the session) closed


class HttpxClient(Client):
    def __init__(self, guard: EgressGuard, limit: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            trust_env=False,
            verify=ssl_context if ssl_context is not None else True,
        )
        # httpx 0.28 does not take a network backend: install ours on its pool (pinned to httpx<0.29).
        pool = self.transport._pool
        pool._network_backend = _PinnedBackend(guard, pool._network_backend)

    async def exchange(self, method: str, url: str, headers: Headers, content: bytes | None, cap: int, remaining: float) -> Reply:
        try:
            request = httpx.Request(
                method,
                parse_url(url),
                headers=list(headers.items()),
                content=content,
                extensions={"timeout": httpx.Timeout(remaining).as_dict()},
            )
            response = await self.transport.handle_async_request(request)
            try:
                chunks, size, truncated = [], 0, False
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > cap:
                        truncated = True  # stop reading: the rest never leaves the socket buffer
                        break
            finally:
                await response.aclose()
            return Reply(
                response.status_code, response.reason_phrase, list(response.headers.raw), b"".join(chunks)[:cap], truncated
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ExchangeFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.transport.aclose()


@functools.lru_cache(maxsize=1024)  # httpx's URL parser costs ~20 us; URLs repeat (polling, retries)
def parse_url(url: str) -> httpx.URL:
    return httpx.URL(url)


def tls_failure(exc: BaseException) -> str | None:
    """The certificate problem behind a connect error, if that is what it is (either layer)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return getattr(seen, "verify_message", None) or str(seen)  # aiohttp's subclass lacks it
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def is_invalid_url(exc: BaseException | None) -> bool:
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, aiohttp.InvalidURL)
