"""http.request: call HTTP APIs through the egress guard, with per-host credentials.

One pooled ``httpx.AsyncClient`` per ``Legs``. Its network backend asks the egress guard for every
new connection and connects only to the addresses the guard checked (TLS SNI and certificate checks
stay on the host name), so DNS rebinding cannot swap the target. Redirects are followed here, one
hop at a time, each re-checked; credentials are re-derived per hop and never cross hosts.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as json_module
import re
import time
import warnings
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import urljoin

import httpcore
import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._context import ActionContext
from .._egress import EgressGuard, Target
from .._errors import ActionError
from .._models import ActionOutput
from .._policy import Policy
from .._registry import action
from .._service import Service
from .._settings import HttpAuth

_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_STATUS = {429, 502, 503, 504}
_IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
                      "proxy-authorization", "keep-alive"}
_SHOWN_HEADERS = ("content-type", "content-length", "location", "retry-after", "etag", "last-modified")
_MAX_RETRY_WAIT_S = 10.0


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


class HttpService(Service):
    client: httpx.AsyncClient

    async def start(self) -> None:
        settings = self.runtime.settings.http
        transport: httpx.AsyncBaseTransport
        if settings.transport == "aiohttp":
            import aiohttp
            from httpx_aiohttp import AiohttpTransport

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
        self.client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False,
                                        headers={"User-Agent": settings.user_agent})
        self._auth = [(_host_rules(a), a) for a in settings.auth]

    async def aclose(self) -> None:
        await self.client.aclose()

    def auth_headers(self, target: Target) -> dict[str, str]:
        """Configured credentials for this host (secrets resolved here, never stored)."""
        headers: dict[str, str] = {}
        for rules, auth in self._auth:
            if any(_rule_matches(r, target.host, target.port) for r in rules):
                for name, value in auth.headers.items():
                    headers[name] = self.runtime.secrets.resolve(value)
        return headers


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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
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
)
async def http_request(ctx: ActionContext, args: RequestInput) -> ActionOutput:
    policy = ctx.policy.http
    if args.method not in policy.methods:
        raise ActionError("denied", f"method {args.method} is not allowed", rule=f"policy.http.methods {policy.methods}")
    _check_headers(args.headers)
    svc = await ctx.service(HttpService)
    guard = ctx.egress
    timeout_s = _timeout(ctx.policy, args)
    deadline = time.monotonic() + timeout_s

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
    first = guard.check_target(url)
    origin = (first.scheme, first.host, first.port)
    redirects: list[dict[str, Any]] = []
    target = first
    attempt = 0
    while True:
        headers = dict(user_headers) if (target.scheme, target.host, target.port) == origin else {
            k: v for k, v in user_headers.items() if k.lower() not in ("authorization", "cookie")
        }
        headers.update(svc.auth_headers(target))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ActionError("timeout", f"no response within {timeout_s:g} s", retryable=True)
        response, body, truncated = await _send(ctx, svc.client, method, url, headers, content, remaining,
                                                policy.max_response_bytes)
        if response.status_code in _REDIRECTS and "location" in response.headers:
            if len(redirects) >= policy.max_redirects:
                raise ActionError("failed", f"more than {policy.max_redirects} redirects (policy.http.max_redirects)",
                                  rule="policy.http.max_redirects",
                                  data={"redirects": redirects})
            next_url = urljoin(str(response.url), response.headers["location"])
            redirects.append({"status": response.status_code, "from": str(response.url), "to": next_url})
            try:
                target = guard.check_target(next_url)
            except ActionError as exc:
                exc.message = f"redirect to {next_url} refused: {exc.message}"
                exc.data = {"redirects": redirects}
                raise
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else "HEAD"
                content = None
                user_headers = {k: v for k, v in user_headers.items() if k.lower() != "content-type"}
            url = next_url
            continue
        if (
            response.status_code in _RETRY_STATUS and method in _IDEMPOTENT and attempt < ctx.settings.http.retries
        ):
            wait = _retry_after(response)
            wait = min(_MAX_RETRY_WAIT_S, wait if wait is not None else 0.2 * 2**attempt)
            if time.monotonic() + wait < deadline - 0.05:
                attempt += 1
                await asyncio.sleep(wait)
                continue
        break
    return _result(response, body, truncated, redirects, policy.max_response_bytes, args.method)


async def _send(
    ctx: ActionContext, client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str],
    content: bytes | None, timeout_s: float, cap: int,
) -> tuple[httpx.Response, bytes, bool]:
    attempt = 0
    while True:
        with ctx.tracer.start_as_current_span(f"HTTP {method}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.full", ctx.redactor.text(url.split("?", 1)[0]))
            try:
                request = client.build_request(method, url, headers=headers, content=content,
                                               timeout=httpx.Timeout(timeout_s))
                span.set_attribute("server.address", request.url.host)
                span.set_attribute("server.port", request.url.port or (443 if request.url.scheme == "https" else 80))
                response = await client.send(request, stream=True)
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
                return response, b"".join(chunks)[:cap], truncated
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                if method in _IDEMPOTENT and attempt < ctx.settings.http.retries:
                    attempt += 1
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                raise ActionError("unavailable", f"cannot connect to {httpx.URL(url).host}: {exc or type(exc).__name__}",
                                  retryable=True) from None
            except httpx.TimeoutException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise ActionError("timeout", f"{method} {url} timed out after {timeout_s:.1f} s ({type(exc).__name__})",
                                  retryable=True) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise ActionError("failed", f"{method} {url} failed: {type(exc).__name__}: {exc}", retryable=True) from None


def _result(
    response: httpx.Response, body: bytes, truncated: bool, redirects: list[dict[str, Any]], cap: int, method: str
) -> ActionOutput:
    ctype = response.headers.get("content-type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    text, parsed = _render(body, mime, response.encoding or "utf-8", truncated)
    lines = [f"HTTP {response.status_code} {response.reason_phrase}  {method} {response.url}"]
    if redirects:
        lines.append(f"(after {len(redirects)} redirect(s) from {redirects[0]['from']})")
    lines += [f"{h}: {response.headers[h]}" for h in _SHOWN_HEADERS if h in response.headers]
    if truncated:
        lines.append(f"[response truncated at {cap} bytes (policy.http.max_response_bytes); the rest was not read]")
    lines.append("")
    lines.append(text)
    data: dict[str, Any] = {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "url": str(response.url),
        "headers": {k: v for k, v in response.headers.items() if k.lower() != "set-cookie"},
        "redirects": redirects,
        "bytes": len(body),
        "truncated": truncated,
        "content_type": mime,
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
    text = body.decode(encoding, errors="replace")
    if mime in ("text/html", "application/xhtml+xml"):
        from markdownify import markdownify

        return markdownify(text, heading_style="ATX").strip(), None
    return text, None
