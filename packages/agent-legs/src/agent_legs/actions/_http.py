"""http.request: call HTTP APIs through the egress guard, with per-host credentials.

One pooled httpx transport per ``Legs`` and event loop (httpx's API over aiohttp's connection
layer by default: measured several times the throughput of httpx's own pool). It asks the egress
guard for every new connection and connects only to the addresses the guard checked (TLS SNI and
certificate checks stay on the host name), so DNS rebinding cannot swap the target. Redirects are
followed here, one hop at a time, each re-checked; credentials are re-derived per hop and never
cross hosts. Requests go straight to the transport (``httpx.Request`` in, ``httpx.Response`` out):
``httpx.AsyncClient`` would add nothing we use (redirects, auth and cookies are handled here) but
its cost, and a cookie jar shared by every session; cookies live for one call's redirect chain.

The action is ``inline``: it runs on the caller's own event loop (no hop to the runtime thread,
which cost more than the request itself on a local API). Connections belong to a loop, so the
service keeps one pinned transport per loop and closes it when that loop shuts down (an async
generator hook, run by ``asyncio.run``) or when ``Legs`` closes, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json as json_module
import logging
import re
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

import httpcore
import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._context import ActionContext
from .._egress import EgressGuard, Target
from .._errors import ActionError
from .._markdown import html_to_markdown
from .._models import ActionOutput
from .._policy import Policy
from .._registry import action
from .._service import Service
from .._settings import HttpAuth

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("agent_legs")

_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_STATUS = {429, 502, 503, 504}
_IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
                      "proxy-authorization", "keep-alive"}
_SHOWN_HEADERS = ("content-type", "content-length", "location", "retry-after", "etag", "last-modified")
_MAX_RETRY_WAIT_S = 10.0
# User headers that carry credentials: never sent to another origin after a redirect.
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|passw|api[-_]?key|cookie|session|signature", re.IGNORECASE)
_CHARSET = re.compile(r"charset=\"?([\w.:-]+)", re.IGNORECASE)
_RENDER_IN_THREAD_BYTES = 200_000  # markdown/JSON rendering of bigger bodies would stall the caller's loop


with warnings.catch_warnings():
    # The contract names a field "json"; pydantic warns that it shadows BaseModel.json (deprecated).
    warnings.filterwarnings("ignore", message='Field name "json"', category=UserWarning)

    class RequestInput(BaseModel):
        model_config = ConfigDict(extra="forbid")

        method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = Field(description="HTTP method.")
        url: str = Field(description="Absolute http(s) URL.")
        headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (no credentials "
                                        "needed: configured credentials are added for their hosts).")
        params: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                            description="Query parameters added to the URL.")
        json: Any = Field(None, description="JSON request body (instead of body).")
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
            if self.json is not None and self.body is not None:
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
        return [{"hostname": host, "host": str(ip), "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET} for ip in dest.addresses]

    async def close(self) -> None:
        return None


@dataclass
class _LoopClient:
    transport: httpx.AsyncBaseTransport
    closer: AsyncGenerator[None, None] | None  # closes the transport when its loop shuts down


# Started services by runtime: inline calls on other loops find theirs without a hop.
_SERVICES: weakref.WeakKeyDictionary[Runtime, HttpService] = weakref.WeakKeyDictionary()


class HttpService(Service):
    """Credentials per host, and one guard-pinned httpx transport per event loop."""

    async def start(self) -> None:
        settings = self.runtime.settings.http
        self._auth = [(_host_rules(a), a) for a in settings.auth]
        self.base_headers = httpx.Headers({"User-Agent": settings.user_agent, "Accept": "*/*",
                                           "Accept-Encoding": "gzip, deflate"})
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task[Any]] = set()
        self._closed = False
        await self.transport_for_loop()
        _SERVICES[self.runtime] = self

    def _new_transport(self) -> httpx.AsyncBaseTransport:
        settings = self.runtime.settings.http
        transport: httpx.AsyncBaseTransport
        if settings.transport == "aiohttp":
            import aiohttp
            from httpx_aiohttp import AiohttpTransport

            # aiohttp asks the resolver for every new connection to a name and connects only to its
            # answers; IP literals skip resolvers, and check_target checks those before each hop.
            connector = aiohttp.TCPConnector(limit=settings.max_connections, resolver=_GuardResolver(self.runtime.egress))  # type: ignore[arg-type]
            transport = AiohttpTransport(client=aiohttp.ClientSession(connector=connector, trust_env=False), trust_env=False)
        else:
            default = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=settings.max_connections,
                                    max_keepalive_connections=settings.max_connections),
                trust_env=False,
            )
            # httpx 0.28 does not take a network backend: install ours on its pool (pinned to httpx<0.29).
            pool = default._pool
            pool._network_backend = _PinnedBackend(self.runtime.egress, pool._network_backend)
            transport = default
        return transport

    async def transport_for_loop(self) -> httpx.AsyncBaseTransport:
        """The pinned transport of the running loop (created on first use there)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None:
            return entry.transport
        if self._closed:
            raise ActionError("unavailable", "Agent Legs is shutting down")
        transport = self._new_transport()
        closer = None
        if loop is not self.runtime.loop:  # the runtime loop's transport is closed by aclose()
            closer = _close_at_loop_shutdown(self, loop, transport)
            await closer.__anext__()  # registers with the loop's async-generator shutdown hook
        with self._lock:
            self._clients[loop] = _LoopClient(transport, closer)
        return transport

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
                    await entry.transport.aclose()
                elif loop.is_closed():
                    pass  # closed without shutting down async generators: nothing can run there now
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

    def auth_headers(self, target: Target) -> dict[str, str]:
        """Configured credentials for this host (secrets resolved here, never stored)."""
        headers: dict[str, str] = {}
        for rules, auth in self._auth:
            if any(_rule_matches(r, target.host, target.port) for r in rules):
                for name, value in auth.headers.items():
                    headers[name] = self.runtime.secrets.resolve(value)
        return headers


async def _close_at_loop_shutdown(
    svc: HttpService, loop: asyncio.AbstractEventLoop, transport: httpx.AsyncBaseTransport
) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; ``loop.shutdown_asyncgens()`` runs the ``finally``."""
    try:
        yield
    finally:
        svc._forget(loop)
        await transport.aclose()


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


def _plain_headers(response: httpx.Response) -> dict[str, str]:
    """Lower-case name -> value (repeats joined by ", "), decoded once (httpx decodes per access)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in response.headers.raw:
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
    (JSON pretty-printed, HTML as markdown, truncated past the policy limit). Redirects are followed.
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
    if args.json is not None:
        content = json_module.dumps(args.json).encode()
        extra = {"Content-Type": "application/json"}
    else:
        content = args.body.encode() if args.body is not None else None
        extra = {}
    # httpx replaces the URL's own query string when params are passed (even params={}): merge here.
    if args.params:
        try:
            url = str(httpx.URL(url).copy_merge_params(
                {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in args.params.items()}))
        except (httpx.InvalidURL, ValueError) as exc:
            raise ActionError("invalid_input", f"invalid URL {url!r}: {exc}") from None
    user_headers = {**extra, **args.headers}
    first = guard.check_target(url)  # refuse before touching any connection pool
    svc = await _service(ctx)
    transport = await svc.transport_for_loop()
    origin = (first.scheme, first.host, first.port)
    redirects: list[dict[str, Any]] = []
    cookies: httpx.Cookies | None = None  # set by this call's responses, for its own redirect hops only
    target = first
    attempt = 0
    while True:
        headers = svc.base_headers.copy()
        headers.update(user_headers if (target.scheme, target.host, target.port) == origin else {
            k: v for k, v in user_headers.items() if not _SENSITIVE_HEADER.search(k)
        })
        headers.update(svc.auth_headers(target))
        response, body, truncated = await _send(ctx, transport, method, url, headers, content, cookies, deadline,
                                                timeout_s, policy.max_response_bytes)
        hdrs = _plain_headers(response)
        if "set-cookie" in hdrs:
            cookies = cookies if cookies is not None else httpx.Cookies()
            cookies.extract_cookies(response)  # domain/path rules of RFC 6265 decide what goes where
        if response.status_code in _REDIRECTS and "location" in hdrs:
            if len(redirects) >= policy.max_redirects:
                raise ActionError("failed", f"more than {policy.max_redirects} redirects (policy.http.max_redirects)",
                                  rule="policy.http.max_redirects",
                                  data={"redirects": redirects})
            next_url = urljoin(url, hdrs["location"])
            redirects.append({"status": response.status_code, "from": url, "to": next_url})
            try:
                target = guard.check_target(next_url)
            except ActionError as exc:
                exc.message = f"redirect to {next_url} refused: {exc.message}"
                exc.data = {"redirects": redirects}
                raise
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else "HEAD"  # RFC 9110 15.4; browsers do the same
                content = None
                user_headers = {k: v for k, v in user_headers.items() if k.lower() != "content-type"}
            url = next_url
            continue
        if (
            response.status_code in _RETRY_STATUS and method in _IDEMPOTENT and attempt < ctx.settings.http.retries
        ):
            wait = _retry_after(hdrs)
            wait = min(_MAX_RETRY_WAIT_S, wait if wait is not None else 0.2 * 2**attempt)
            if time.monotonic() + wait < deadline - 0.05:  # a retry that cannot finish in time is pointless
                attempt += 1
                await asyncio.sleep(wait)
                continue
        break
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    cap = policy.max_response_bytes
    if len(body) > _RENDER_IN_THREAD_BYTES:
        return await asyncio.to_thread(_result, response, hdrs, body, truncated, redirects, cap, args.method,
                                       elapsed_ms, attempt)
    return _result(response, hdrs, body, truncated, redirects, cap, args.method, elapsed_ms, attempt)


async def _send(
    ctx: ActionContext, transport: httpx.AsyncBaseTransport, method: str, url: str, headers: httpx.Headers,
    content: bytes | None, cookies: httpx.Cookies | None, deadline: float, timeout_s: float, cap: int,
) -> tuple[httpx.Response, bytes, bool]:
    """One request (plus connect retries), read up to ``cap`` bytes, all within ``deadline``."""
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ActionError("timeout", f"no response within {timeout_s:g} s", retryable=True)
        try:
            request = httpx.Request(method, _parse_url(url), headers=headers, content=content,
                                    extensions={"timeout": httpx.Timeout(remaining).as_dict()})
        except (httpx.InvalidURL, ValueError) as exc:
            raise ActionError("invalid_input", f"invalid URL {url!r}: {exc}") from None
        if cookies:
            cookies.set_cookie_header(request)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": ctx.redactor.text(url.split("?", 1)[0]),  # query strings often carry keys
            "server.address": request.url.host,
            "server.port": request.url.port or (443 if request.url.scheme == "https" else 80),
        }
        if attempt:
            attributes["http.request.resend_count"] = attempt
        with ctx.tracer.start_as_current_span(f"HTTP {method}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                # The whole exchange, body included, ends at the deadline (a slow drip cannot stretch it).
                async with asyncio.timeout(remaining):
                    response = await transport.handle_async_request(request)
                    response.request = request
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
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(response.status_code))
                return response, b"".join(chunks)[:cap], truncated
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                tls = _tls_failure(exc)
                span.set_attribute("error.type", "tls" if tls else type(exc).__name__)
                if tls:  # retrying cannot fix a certificate
                    raise ActionError("failed", f"TLS verification failed for {request.url.host}: {tls}",
                                      hint="The server's certificate is not valid for this host name.") from None
                wait = 0.2 * 2**attempt
                if (method in _IDEMPOTENT and attempt < ctx.settings.http.retries
                        and time.monotonic() + wait < deadline - 0.05):
                    attempt += 1
                    await asyncio.sleep(wait)
                    continue
                raise ActionError("unavailable", f"cannot connect to {httpx.URL(url).host}: {exc or type(exc).__name__}",
                                  retryable=True) from None
            except (httpx.TimeoutException, TimeoutError) as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", "timeout")
                raise ActionError("timeout", f"{method} {url} did not complete within {timeout_s:g} s",
                                  retryable=True) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise ActionError("failed", f"{method} {url} failed: {type(exc).__name__}: {exc}", retryable=True) from None


def _result(
    response: httpx.Response, headers: dict[str, str], body: bytes, truncated: bool, redirects: list[dict[str, Any]],
    cap: int, method: str, elapsed_ms: float, retries: int,
) -> ActionOutput:
    ctype = headers.get("content-type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    charset = _CHARSET.search(ctype)
    text, parsed = _render(body, mime, charset.group(1) if charset else "utf-8", truncated)
    url = str(response.url)
    lines = [f"HTTP {response.status_code} {response.reason_phrase}  {method} {url}"]
    if redirects:
        lines.append(f"(after {len(redirects)} redirect(s) from {redirects[0]['from']})")
    lines += [f"{h}: {headers[h]}" for h in _SHOWN_HEADERS if h in headers]
    if truncated:
        lines.append(f"[response truncated at {cap} bytes (policy.http.max_response_bytes); the rest was not read]")
    lines.append("")
    lines.append(text)
    data: dict[str, Any] = {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "url": url,
        "headers": {k: v for k, v in headers.items() if k != "set-cookie"},
        "redirects": redirects,
        "bytes": len(body),
        "truncated": truncated,
        "content_type": mime,
        "elapsed_ms": elapsed_ms,
        "retries": retries,
    }
    if parsed is not None:
        data["json"] = parsed
    return ActionOutput(output="\n".join(lines).rstrip(), data=data)


def _render(body: bytes, mime: str, encoding: str, truncated: bool) -> tuple[str, Any]:
    if not body:
        return "(empty body)", None
    if mime == "application/json" or mime.endswith("+json"):
        try:
            parsed = json_module.loads(body)
        except ValueError:
            pass
        else:
            return json_module.dumps(parsed, indent=2, ensure_ascii=False), parsed
    is_text = mime.startswith("text/") or mime in ("application/xml", "application/javascript", "") or mime.endswith("+xml")
    if not is_text or b"\x00" in body[:4096]:
        return f"[binary content: {len(body)} bytes of {mime or 'unknown type'}]", None
    try:
        text = body.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    if mime in ("text/html", "application/xhtml+xml"):
        return html_to_markdown(text), None
    return text, None
