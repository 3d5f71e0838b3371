"""http.request: call HTTP APIs through the egress guard, with per-host credentials.

One pooled client per ``Legs`` and event loop. The default connection layer is aiohttp, driven
directly (no httpx objects on the hot path: they cost more than the exchange itself on a local
API); ``settings.http.transport = "httpx"`` uses httpx's own pool instead. Both ask the egress
guard for every new connection and connect only to the addresses the guard checked (TLS SNI and
certificate checks stay on the host name), so DNS rebinding cannot swap the target. Redirects are
followed here, one hop at a time, each re-checked; credentials are re-derived per hop and never
cross hosts. No client keeps cookies: they live for one call's redirect chain only.

The action is ``inline``: it runs on the caller's own event loop (no hop to the runtime thread,
which cost more than the request itself on a local API). Connections belong to a loop, so the
service keeps one pinned client per loop and closes it when that loop shuts down (an async
generator hook, run by ``asyncio.run``) or when ``Legs`` closes, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ipaddress
import json as json_module
import logging
import re
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urljoin

import httpcore
import httpx
import yarl
from multidict import CIMultiDict
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..._context import ActionContext
from ..._egress import EgressGuard, Target
from ..._errors import ActionError, ErrorType
from ..._markdown import html_to_markdown
from ..._models import ActionOutput
from ..._policy import Policy
from ..._registry import action
from ..._schema import JsonText, name_value_pairs, policy_enum
from ..._secrets import Redactor
from ..._service import Service
from ..._settings import HttpAuth

if TYPE_CHECKING:
    from ..._runtime import Runtime

log = logging.getLogger("agent_legs")

_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_STATUS = {429, 502, 503, 504}
_IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FORBIDDEN_HEADERS = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "keep-alive",
}
_SHOWN_HEADERS = ("content-type", "content-length", "location", "retry-after", "etag", "last-modified")
_MAX_RETRY_WAIT_S = 10.0
# The only caller headers a redirect carries to another origin (scheme, host, port): any other
# header may be a credential under a name nobody can list (X-Functions-Key, Ocp-Apim-Subscription-Key,
# X-Access-Key, "Bearer", ...). Content-Type goes only where the body goes (it is dropped with it).
_CROSS_ORIGIN_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "accept-encoding",
        "user-agent",
        "content-type",
        "content-language",
        "cache-control",
        "pragma",
        "dnt",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "range",
    }
)
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_CHARSET = re.compile(r"charset=\"?([\w.:-]+)", re.IGNORECASE)
_RENDER_IN_THREAD_BYTES = 200_000  # markdown/JSON rendering of bigger bodies would stall the caller's loop


class RequestInput(BaseModel):
    # "json" is the contract's (model-facing) field name; the attribute is json_body, so that it does not
    # shadow BaseModel.json. Dumps use the alias: logs, approvals and spans show "json".
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)

    method: Annotated[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], policy_enum("http.methods")] = Field(
        description="HTTP method."
    )
    url: str = Field(description="Absolute http(s) URL.")
    headers: name_value_pairs(  # type: ignore[valid-type]
        str,
        'Extra request headers as name/value pairs, e.g. [{"name": "Accept", "value": '
        '"text/csv"}] (no credentials needed: configured credentials are added for their '
        "hosts).",
    ) = Field(default_factory=dict)
    params: name_value_pairs(  # type: ignore[valid-type]
        str | int | float | bool,
        'Query parameters added to the URL, as name/value pairs, e.g. [{"name": "page", "value": 2}].',
    ) = Field(default_factory=dict)
    json_body: JsonText = Field(
        None, alias="json", description='JSON request body written as JSON text, e.g. "{"total": 12.5}" (instead of body).'
    )
    body: str | None = Field(None, description="Raw text request body (instead of json).")
    timeout_s: float | None = Field(None, gt=0, description="Timeout in seconds (capped by the policy).")

    @model_validator(mode="before")
    @classmethod
    def _upper_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].upper()}
        return data

    @model_validator(mode="after")
    def _one_body(self) -> RequestInput:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self


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
class _Reply:
    """One HTTP exchange, body read (up to the cap) and the connection released."""

    status: int
    reason: str
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    truncated: bool


class _ConnectFailed(Exception):
    """No connection could be made (the cause is chained): retryable for idempotent methods."""


class _ExchangeFailed(Exception):
    """The connection broke or the response was malformed."""


class _Client:
    """A connection pool bound to one event loop, pinned to addresses the egress guard checked."""

    async def exchange(
        self, method: str, url: str, headers: CIMultiDict[str], content: bytes | None, cap: int, remaining: float
    ) -> _Reply:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        """Release what can be released without the client's loop, which is closed (nothing can run there)."""


class _AiohttpClient(_Client):
    def __init__(self, guard: EgressGuard, limit: int, ssl_context: ssl.SSLContext | None = None) -> None:
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
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies never outlive a call (nor cross sessions)
            timeout=aiohttp.ClientTimeout(total=None),  # the caller's asyncio.timeout bounds the exchange
            skip_auto_headers=("Content-Type",),  # like httpx: a raw body gets no invented type
            auto_decompress=True,  # incremental and bounded per chunk: the cap holds for decoded bytes
        )
        self._guard = guard
        self._invalid_url = aiohttp.InvalidURL
        self._errors = (aiohttp.ClientError, aiohttp.InvalidURL)
        self._connect_errors = (aiohttp.ClientConnectorError,)
        self._checked: set[tuple[str, int | None]] = set()  # (host, port) as aiohttp reads them, guard-checked

    async def _pin_literal(self, url: yarl.URL) -> None:
        """aiohttp connects to what it takes for an IP literal without asking the resolver: have the
        guard check exactly that host (whatever ``check_target``'s parser read in the URL)."""
        import aiohttp.helpers

        key = (url.raw_host or "", url.port)
        if key in self._checked:
            return
        if aiohttp.helpers.is_ip_address(key[0]):
            await self._guard.check_host(key[0], key[1] or 0)  # rules and address: no DNS involved
        if len(self._checked) > 4096:
            self._checked.clear()
        self._checked.add(key)  # a pure function of host, port and the (fixed) policy

    async def exchange(
        self, method: str, url: str, headers: CIMultiDict[str], content: bytes | None, cap: int, remaining: float
    ) -> _Reply:
        try:
            try:
                parsed = yarl.URL(url)
            except ValueError as exc:
                raise self._invalid_url(url) from exc
            await self._pin_literal(parsed)
            async with self.session.request(method, parsed, headers=headers, data=content, allow_redirects=False) as response:
                chunks, size, truncated = [], 0, False
                async for chunk in response.content.iter_any():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > cap:
                        truncated = True  # stop reading: the rest never leaves the socket buffer
                        response.close()  # and the connection is not reused
                        break
                return _Reply(
                    response.status,
                    response.reason or "",
                    list(response.raw_headers),
                    b"".join(chunks)[:cap] if truncated else b"".join(chunks),
                    truncated,
                )
        except self._connect_errors as exc:
            raise _ConnectFailed(str(exc) or type(exc).__name__) from exc
        except (*self._errors, OSError, ValueError) as exc:  # OSError: a socket error aiohttp did not wrap
            raise _ExchangeFailed(f"{type(exc).__name__}: {exc}") from exc

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


class _HttpxClient(_Client):
    def __init__(self, guard: EgressGuard, limit: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            trust_env=False,
            verify=ssl_context if ssl_context is not None else True,
        )
        # httpx 0.28 does not take a network backend: install ours on its pool (pinned to httpx<0.29).
        pool = self.transport._pool
        pool._network_backend = _PinnedBackend(guard, pool._network_backend)

    async def exchange(
        self, method: str, url: str, headers: CIMultiDict[str], content: bytes | None, cap: int, remaining: float
    ) -> _Reply:
        try:
            request = httpx.Request(
                method,
                _parse_url(url),
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
            return _Reply(
                response.status_code, response.reason_phrase, list(response.headers.raw), b"".join(chunks)[:cap], truncated
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _ConnectFailed(str(exc) or type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _ExchangeFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.transport.aclose()


@dataclass
class _LoopClient:
    client: _Client
    closer: AsyncGenerator[None, None] | None  # closes the client when its loop shuts down


# Started services by runtime: inline calls on other loops find theirs without a hop.
_SERVICES: weakref.WeakKeyDictionary[Runtime, HttpService] = weakref.WeakKeyDictionary()


class HttpService(Service):
    """Credentials per host, and one guard-pinned client per event loop."""

    async def start(self) -> None:
        settings = self.runtime.settings.http
        self._auth = [(_host_rules(a), a) for a in settings.auth]
        self.base_headers: CIMultiDict[str] = CIMultiDict(
            {"User-Agent": settings.user_agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        )
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task[Any]] = set()
        self._closed = False
        await self.client_for_loop()
        _SERVICES[self.runtime] = self

    def new_client(self, ssl_context: ssl.SSLContext | None = None) -> _Client:
        settings = self.runtime.settings.http
        cls = _AiohttpClient if settings.transport == "aiohttp" else _HttpxClient
        return cls(self.runtime.egress, settings.max_connections, ssl_context)

    async def client_for_loop(self) -> _Client:
        """The pinned client of the running loop (created on first use there)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None:
            return entry.client
        if self._closed:
            raise ActionError("unavailable", "Agent Legs is shutting down")
        self._drop_closed_loops()
        client = self.new_client()
        closer = None
        if loop is not self.runtime.loop:  # the runtime loop's client is closed by aclose()
            closer = _close_at_loop_shutdown(self, loop, client)
            await closer.__anext__()  # registers with the loop's async-generator shutdown hook
        with self._lock:
            self._clients[loop] = _LoopClient(client, closer)
        return client

    def _drop_closed_loops(self) -> None:
        """Clients of loops closed without shutting down (so their hook never ran): nothing can
        close them there any more; release their sockets now rather than at ``Legs.close()``."""
        with self._lock:
            gone = [(loop, e) for loop, e in self._clients.items() if loop.is_closed()]
            for loop, _ in gone:
                del self._clients[loop]
        for _, entry in gone:
            self._abandon(entry)

    @staticmethod
    def _abandon(entry: _LoopClient) -> None:
        try:
            entry.client.abandon()
        except Exception:
            log.debug("releasing an HTTP client of a closed loop failed", exc_info=True)

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._clients.pop(loop, None)

    async def aclose(self) -> None:
        self._closed = True
        _SERVICES.pop(self.runtime, None)
        with self._lock:
            entries = list(self._clients.items())
            self._clients.clear()
        for loop, entry in entries:
            try:
                if entry.closer is None or loop is asyncio.get_running_loop():
                    await entry.client.aclose()
                elif loop.is_closed():
                    self._abandon(entry)  # closed without shutting down async generators: nothing can run there
                elif loop.is_running():
                    # Do not wait: that loop may be blocked in the very Legs.close() that called us.
                    loop.call_soon_threadsafe(self._spawn_close, entry)
                else:  # e.g. the private loop of sync run() calls, idle between calls
                    await self._close_on_idle_loop_in_thread(loop, entry)
            except Exception:
                log.exception("closing an HTTP client failed")

    def _spawn_close(self, entry: _LoopClient) -> None:
        assert entry.closer is not None
        task = asyncio.get_running_loop().create_task(entry.closer.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_on_idle_loop_in_thread(self, loop: asyncio.AbstractEventLoop, entry: _LoopClient) -> None:
        # An idle loop can only be driven from a thread running no loop; not the default executor,
        # which is already shut down when an atexit hook closes a forgotten Legs.
        mine = asyncio.get_running_loop()
        done: asyncio.Future[None] = mine.create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        def work() -> None:
            try:
                self._close_on_idle_loop(loop, entry)
            finally:
                with contextlib.suppress(RuntimeError):  # our loop already gone
                    mine.call_soon_threadsafe(finish)

        threading.Thread(target=work, name="agent-legs-http-close", daemon=True).start()
        await asyncio.wait_for(done, 5)

    def _close_on_idle_loop(self, loop: asyncio.AbstractEventLoop, entry: _LoopClient) -> None:
        assert entry.closer is not None
        try:
            loop.run_until_complete(entry.closer.aclose())
        except RuntimeError:  # started running meanwhile
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._spawn_close, entry)

    def auth_headers(self, target: Target, url: str = "") -> dict[str, str]:
        """Configured credentials for this host (secrets resolved here, never stored).

        An entry's headers travel only over https, to a loopback name (127.0.0.0/8, ::1,
        localhost), or with the entry's ``allow_http``; a plain-http request to a host an entry
        lists is refused (``denied``) rather than sent without them: it could otherwise be made
        to fall back silently, or the agent retry it with the secret in its own headers."""
        headers: dict[str, str] = {}
        for index, (rules, auth) in enumerate(self._auth):
            if any(_rule_matches(r, target.host, target.port) for r in rules):
                if target.scheme != "https" and not auth.allow_http and not _is_loopback(target.host):
                    raise ActionError(
                        "denied",
                        f"{url or target.host} is plain http: the credentials configured for {target.host} "
                        f"(settings.http.auth[{index}]) are sent only over https; nothing was sent",
                        rule=f"settings.http.auth[{index}].allow_http",
                        hint="Use the https:// URL of this API.",
                    )
                for name, value in auth.headers.items():
                    headers[name] = self.runtime.secrets.resolve(value)
        return headers


async def _close_at_loop_shutdown(
    svc: HttpService, loop: asyncio.AbstractEventLoop, client: _Client
) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; ``loop.shutdown_asyncgens()`` runs the ``finally``."""
    try:
        yield
    finally:
        svc._forget(loop)
        await client.aclose()


async def _service(ctx: ActionContext) -> HttpService:
    svc = _SERVICES.get(ctx.runtime)
    if svc is not None:
        return svc
    if ctx.runtime.in_loop_thread:
        return await ctx.service(HttpService)
    # First call from another loop: start the shared service where services live (once).
    return await asyncio.wrap_future(ctx.runtime.submit(ctx.runtime.service(HttpService)))


def _host_rules(auth: HttpAuth) -> list[tuple[re.Pattern[str], int | None]]:
    out = []
    for h in auth.hosts:
        host, _, port = h.lower().rpartition(":") if re.search(r":\d+$", h) else (h.lower(), "", "")
        out.append((re.compile("^" + re.escape(host).replace(r"\*", "[^/]*") + "$"), int(port) if port else None))
    return out


def _is_loopback(host: str) -> bool:
    """A loopback literal or ``localhost`` (which the egress guard only lets through to loopback)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _rule_matches(rule: tuple[re.Pattern[str], int | None], host: str, port: int) -> bool:
    rx, p = rule
    return rx.match(host) is not None and (p is None or p == port)


def _timeout(policy: Policy, args: RequestInput) -> float:
    limit = policy.http.timeout_s
    return min(args.timeout_s, limit) if args.timeout_s else limit


def _check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ActionError("invalid_input", f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\x00") or any(ord(c) < 32 and c != "\t" for c in value):
            raise ActionError("invalid_input", f"header {name!r} contains control characters (CR/LF/NUL)")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ActionError("invalid_input", f"header {name!r} is set by the client and cannot be overridden")


@functools.lru_cache(maxsize=1024)  # httpx's URL parser costs ~20 us; URLs repeat (polling, retries)
def _parse_url(url: str) -> httpx.URL:
    return httpx.URL(url)


def _tls_failure(exc: BaseException) -> str | None:
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


def _plain_headers(raw_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case name -> value (repeats joined by ", "), decoded once."""
    out: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name = raw_name.decode("latin-1").lower()
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@action(
    "http.request",
    description="""Make an HTTP request to an allowed host and return status, key headers and the body
    (JSON compact, HTML as markdown with absolute links, truncated past the policy limit). Redirects are followed.
    Configured credentials are added automatically for their hosts: never put secrets in arguments.""",
    timeout=lambda policy, args: _timeout(policy, args) + 1.0,
    inline=True,  # loop-agnostic: one pinned client per loop (see HttpService)
)
async def http_request(ctx: ActionContext, args: RequestInput) -> ActionOutput:
    started = time.monotonic()
    policy = ctx.policy.http
    if args.method not in policy.methods:
        raise ActionError("denied", f"method {args.method} is not allowed", rule=f"policy.http.methods {policy.methods}")
    _check_headers(args.headers)
    guard = ctx.egress
    timeout_s = _timeout(ctx.policy, args)
    deadline = started + timeout_s

    method, url = args.method, args.url
    content: bytes | None
    if args.json_body is not None:
        content = json_module.dumps(args.json_body).encode()
        extra = {"Content-Type": "application/json"}
    else:
        content = args.body.encode() if args.body is not None else None
        extra = {}
    # httpx replaces the URL's own query string when params are passed (even params={}): merge here.
    if args.params:
        try:
            url = str(
                httpx.URL(url).copy_merge_params(
                    {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in args.params.items()}
                )
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ActionError("invalid_input", f"invalid URL {url!r}: {exc}") from None
    user_headers = {**extra, **args.headers}
    first = guard.check_target(url)  # refuse before touching any connection pool
    svc = await _service(ctx)
    client = await svc.client_for_loop()
    origin = (first.scheme, first.host, first.port)
    cap = policy.max_response_bytes
    redirects: list[dict[str, Any]] = []
    cookies: httpx.Cookies | None = None  # set by this call's responses, for its own redirect hops only
    target = first
    attempt = 0
    while True:
        headers = svc.base_headers.copy()
        headers.update(
            user_headers
            if (target.scheme, target.host, target.port) == origin
            else {k: v for k, v in user_headers.items() if k.lower() in _CROSS_ORIGIN_HEADERS}
        )
        try:
            auth = svc.auth_headers(target, url)
        except ActionError as exc:
            if redirects:
                exc.message = f"redirect to {url} refused: {exc.message}"
                exc.data = {"redirects": redirects}
            raise
        if auth:
            headers.update(auth)
        if cookies:
            _add_cookie_header(headers, cookies, method, url)
        reply = await _send(
            ctx,
            client,
            method,
            url,
            target,
            headers,
            content,
            deadline,
            timeout_s,
            cap,
            unsafe=args.method not in _IDEMPOTENT,
            first_hop=not redirects,
        )
        hdrs = _plain_headers(reply.raw_headers)
        if "set-cookie" in hdrs:
            cookies = cookies if cookies is not None else httpx.Cookies()
            # domain/path rules of RFC 6265 decide what goes where
            cookies.extract_cookies(
                httpx.Response(reply.status, headers=reply.raw_headers, request=httpx.Request(method, _parse_url(url)))
            )
        if reply.status in _REDIRECTS and "location" in hdrs:
            if len(redirects) >= policy.max_redirects:
                raise ActionError(
                    "failed",
                    f"more than {policy.max_redirects} redirects (policy.http.max_redirects)",
                    rule="policy.http.max_redirects",
                    data={"redirects": redirects},
                )
            next_url = urljoin(url, hdrs["location"])
            redirects.append({"status": reply.status, "from": url, "to": next_url})
            try:
                target = guard.check_target(next_url)
            except ActionError as exc:
                exc.message = f"redirect to {next_url} refused: {exc.message}"
                exc.data = {"redirects": redirects}
                raise
            if reply.status == 303 or (reply.status in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else "HEAD"  # RFC 9110 15.4; browsers do the same
                content = None
                user_headers = {k: v for k, v in user_headers.items() if k.lower() != "content-type"}
            url = next_url
            continue
        if reply.status in _RETRY_STATUS and method in _IDEMPOTENT and attempt < ctx.settings.http.retries:
            wait = _retry_after(hdrs)
            wait = min(_MAX_RETRY_WAIT_S, wait if wait is not None else 0.2 * 2**attempt)
            if time.monotonic() + wait < deadline - 0.05:  # a retry that cannot finish in time is pointless
                attempt += 1
                await asyncio.sleep(wait)
                continue
        break
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    if len(reply.body) > _RENDER_IN_THREAD_BYTES:
        return await asyncio.to_thread(_result, reply, url, hdrs, redirects, cap, args.method, elapsed_ms, attempt)
    return _result(reply, url, hdrs, redirects, cap, args.method, elapsed_ms, attempt, ctx.redactor)


def _add_cookie_header(headers: CIMultiDict[str], cookies: httpx.Cookies, method: str, url: str) -> None:
    """The cookies this call's earlier hops set that RFC 6265 sends to ``url`` (a caller's own Cookie wins)."""
    if "Cookie" in headers:
        return
    probe = httpx.Request(method, _parse_url(url))
    cookies.set_cookie_header(probe)
    if "cookie" in probe.headers:
        headers["Cookie"] = probe.headers["cookie"]


def _unknown_outcome(method: str, url: str, what: str, type_: ErrorType = "timeout") -> ActionError:
    """A non-idempotent request that may have reached the server: never "retryable" (a new tool
    call would repeat the effect); the message says so and how to check."""
    return ActionError(
        type_,
        f"{method} {url}: {what}. The request may have reached the server and taken effect; its outcome is unknown",
        retryable=False,
        hint="Do not repeat it blindly: first check whether it took effect (e.g. GET the resource it "
        "creates or changes), then repeat it only if it did not.",
    )


async def _send(
    ctx: ActionContext,
    client: _Client,
    method: str,
    url: str,
    target: Target,
    headers: CIMultiDict[str],
    content: bytes | None,
    deadline: float,
    timeout_s: float,
    cap: int,
    *,
    unsafe: bool,
    first_hop: bool,
) -> _Reply:
    """One request (plus connect retries), read up to ``cap`` bytes, all within ``deadline``.

    ``unsafe``: the call's method is not idempotent (POST, PATCH): a failure after its request may
    have been transmitted (a timeout, a broken exchange), or on a later hop (the first already
    acted), is reported as an unknown outcome, never as retryable."""
    acted = unsafe and not first_hop  # an earlier hop of this call already reached the server
    try:
        _parse_url(url)  # one URL grammar (httpx's, cached) for both layers, as check_target's companion
    except (httpx.InvalidURL, ValueError) as exc:
        raise ActionError("invalid_input", f"invalid URL {url!r}: {exc}") from None
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if acted:
                raise _unknown_outcome(method, url, f"the redirect could not be followed within {timeout_s:g} s")
            raise ActionError("timeout", f"no response within {timeout_s:g} s", retryable=True)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": ctx.redactor.text(url.split("?", 1)[0]),  # query strings often carry keys
            "server.address": target.host,
            "server.port": target.port,
        }
        if attempt:
            attributes["http.request.resend_count"] = attempt
        # A child of the call's span (the current one); nothing nests under it, so it is not made current.
        span = ctx.tracer.start_span(f"HTTP {method}", kind=SpanKind.CLIENT, attributes=attributes)
        try:
            try:
                # The whole exchange, body included, ends at the deadline (a slow drip cannot stretch it).
                async with asyncio.timeout(remaining):
                    reply = await client.exchange(method, url, headers, content, cap, remaining)
            except _ConnectFailed as exc:
                span.set_status(Status(StatusCode.ERROR, "ConnectError"))
                tls = _tls_failure(exc)
                span.set_attribute("error.type", "tls" if tls else "ConnectError")
                if tls:  # retrying cannot fix a certificate
                    raise ActionError(
                        "failed",
                        f"TLS verification failed for {target.host}: {tls}",
                        hint="The server's certificate is not valid for this host name.",
                    ) from None
                wait = 0.2 * 2**attempt
                if method in _IDEMPOTENT and attempt < ctx.settings.http.retries and time.monotonic() + wait < deadline - 0.05:
                    attempt += 1
                    await asyncio.sleep(wait)
                    continue
                if acted:
                    raise _unknown_outcome(method, url, f"the redirect target cannot be reached ({exc})", "unavailable") from None
                raise ActionError("unavailable", f"cannot connect to {target.host}: {exc}", retryable=True) from None
            except TimeoutError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", "timeout")
                if unsafe:
                    raise _unknown_outcome(method, url, f"no complete response within {timeout_s:g} s") from None
                raise ActionError("timeout", f"{method} {url} did not complete within {timeout_s:g} s", retryable=True) from None
            except _ExchangeFailed as exc:
                cause = exc.__cause__
                span.set_status(Status(StatusCode.ERROR, type(cause or exc).__name__))
                span.set_attribute("error.type", type(cause or exc).__name__)
                if _is_invalid_url(cause):
                    raise ActionError("invalid_input", f"invalid URL {url!r}: {cause}") from None
                if unsafe:
                    raise _unknown_outcome(method, url, f"the exchange failed ({exc})", "failed") from None
                raise ActionError("failed", f"{method} {url} failed: {exc}", retryable=True) from None
            span.set_attribute("http.response.status_code", reply.status)
            if reply.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(reply.status))
            return reply
        finally:
            span.end()


def _is_invalid_url(exc: BaseException | None) -> bool:
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, aiohttp.InvalidURL)


def _result(
    reply: _Reply,
    url: str,
    headers: dict[str, str],
    redirects: list[dict[str, Any]],
    cap: int,
    method: str,
    elapsed_ms: float,
    retries: int,
    redactor: Redactor | None = None,
) -> ActionOutput:
    body = reply.body
    ctype = headers.get("content-type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    charset = _CHARSET.search(ctype)
    url = str(_parse_url(url))
    text, parsed = _render(body, mime, charset.group(1) if charset else "utf-8", reply.truncated, url, redactor)
    lines = [f"HTTP {reply.status} {reply.reason}  {method} {url}"]
    if redirects:
        lines.append(f"(after {len(redirects)} redirect(s) from {redirects[0]['from']})")
    lines += [f"{h}: {headers[h]}" for h in _SHOWN_HEADERS if h in headers]
    if reply.truncated:
        lines.append(f"[response truncated at {cap} bytes (policy.http.max_response_bytes); the rest was not read]")
    lines.append("")
    lines.append(text)
    data: dict[str, Any] = {
        "status": reply.status,
        "reason": reply.reason,
        "url": url,
        "headers": {k: v for k, v in headers.items() if k != "set-cookie"},
        "redirects": redirects,
        "bytes": len(body),
        "truncated": reply.truncated,
        "content_type": mime,
        "elapsed_ms": elapsed_ms,
        "retries": retries,
    }
    if parsed is not None:
        data["json"] = parsed
    return ActionOutput(output="\n".join(lines).rstrip(), data=data)


def _render(
    body: bytes, mime: str, encoding: str, truncated: bool, url: str | None = None, redactor: Redactor | None = None
) -> tuple[str, Any]:
    """The body as the model reads it: JSON compact (indentation cost ~1.6x the characters on list-heavy
    data, so the output cap cut sooner), HTML as markdown with links made absolute against the final
    URL (after redirects, as a browser resolves them: the model can follow them as they are). A body
    cut at the byte cap is scrubbed with ``cut=True`` first, so a secret straddling the cap leaves no prefix."""
    if not body:
        return "(empty body)", None
    if mime == "application/json" or mime.endswith("+json"):
        try:
            parsed = json_module.loads(body)
        except ValueError:
            pass
        else:
            return json_module.dumps(parsed, ensure_ascii=False, separators=(",", ":")), parsed
    is_text = mime.startswith("text/") or mime in ("application/xml", "application/javascript", "") or mime.endswith("+xml")
    if not is_text or b"\x00" in body[:4096]:
        return f"[binary content: {len(body)} bytes of {mime or 'unknown type'}]", None
    try:
        text = body.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    if truncated and redactor is not None:
        # Only the head was read: a secret straddling the cap must not leave its prefix (before markdown).
        text = redactor.text(text, cut=True)
    if mime in ("text/html", "application/xhtml+xml"):
        return html_to_markdown(text, base_url=url), None
    return text, None
