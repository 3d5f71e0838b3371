"""http.request: call HTTP APIs through the egress guard, with per-host credentials.

This module holds the handler: the checks of the request, the redirect loop, retries, spans and the
rendering of the reply. The rest of the family: ``_models`` (``RequestInput``), ``_client`` (the aiohttp
and httpx connection layers, pinned to the addresses the guard checked), ``_service`` (``HttpService``:
credentials per host, one client per event loop).

Redirects are followed here, one hop at a time, each re-checked by the guard; credentials are re-derived
per hop and never cross hosts, and of the caller's own headers only harmless ones cross origins. No
client keeps cookies: they live for one call's redirect chain only. Retries are for idempotent methods
only, within the deadline; a non-idempotent request whose outcome is unknown is never called retryable.
The handler's deadline (``timeout_s``, the pipeline's is one second later) ends each exchange, body
included; it is an entry of the loop's ``_deadlines`` watchdog, not a timer of its own per call.

The action is ``inline``: it runs on the caller's own event loop (see ``_service``).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json as json_module
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

import httpx
from multidict import CIMultiDict
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from ... import _deadlines as deadlines
from ..._context import ActionContext
from ..._egress import Target
from ..._errors import ActionError, ErrorType
from ..._markdown import html_to_markdown
from ..._models import ActionOutput
from ..._policy import Policy
from ..._registry import action
from ..._secrets import Redactor
from ..._telemetry._semconv import (
    ERROR_TYPE,
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_FULL,
)
from ..._telemetry._spans import Tracer as AgentLegsTracer
from ._client import Client, ConnectFailed, ExchangeFailed, Headers, Reply, is_invalid_url, parse_url, tls_failure
from ._models import RequestInput
from ._service import SERVICES, service_for

__all__ = ["RequestInput", "http_request"]

_REDIRECTS = {301, 302, 303, 307, 308}
_RETRY_STATUS = {429, 502, 503, 504}
_IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # \Z, not $: $ also matches before a trailing newline
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")  # CR, LF, NUL and every other control character but tab
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
_CHARSET = re.compile(r"charset=\"?([\w.:-]+)", re.IGNORECASE)
_CACHED_URL_CHARS = 2048
_CACHED_CTYPE_CHARS = 256
# Response header names as read before (raw bytes -> lower-case str, a pure function): at most
# _MAX_NAMES short ones, whatever the servers send; names past that are decoded per response.
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 512
_MAX_NAME_BYTES = 64
_RENDER_IN_THREAD_BYTES = 200_000  # markdown/JSON rendering of bigger bodies would stall the caller's loop


def _pipeline_timeout(policy: Policy, args: RequestInput) -> float:
    """The pipeline's deadline: one second after the handler's (``http_request`` computes its own inline)."""
    limit = policy.http.timeout_s
    return (min(args.timeout_s, limit) if args.timeout_s else limit) + 1.0


def check_headers(headers: dict[str, str]) -> None:
    """Names are tokens, values carry no control character but tab, none is the client's own.

    Plain loops and one regex: no generator (with its closure cell and function) per header. The handler
    calls it only for a call with headers (most have none)."""
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ActionError("invalid_input", f"invalid header name {name!r}")
        if _CONTROL.search(value):
            raise ActionError("invalid_input", f"header {name!r} contains control characters (CR/LF/NUL)")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ActionError("invalid_input", f"header {name!r} is set by the client and cannot be overridden")


def _plain_headers(raw_headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case name -> value (repeats joined by ", "), decoded once. Names are taken from
    ``_NAMES`` (servers repeat a few): one lookup instead of a decode and a lower per header."""
    out: dict[str, str] = {}
    names = _NAMES
    for raw_name, raw_value in raw_headers:
        name = names.get(raw_name)
        if name is None:
            name = raw_name.decode("latin-1").lower()
            if len(names) < _MAX_NAMES and len(raw_name) <= _MAX_NAME_BYTES:  # the server chooses them: bounded
                names[raw_name] = name
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
    timeout=_pipeline_timeout,
    inline=True,  # loop-agnostic: one pinned client per loop (see HttpService)
)
async def http_request(ctx: ActionContext, args: RequestInput) -> ActionOutput:
    started = time.monotonic()
    runtime = ctx.runtime  # the context's properties read the runtime: read it once
    policy = runtime.policy.http
    if args.method not in policy.methods:
        raise ActionError("denied", f"method {args.method} is not allowed", rule=f"policy.http.methods {policy.methods}")
    if args.headers:  # most calls send none: no call for them
        check_headers(args.headers)
    guard = runtime.egress
    timeout_s = min(args.timeout_s, policy.timeout_s) if args.timeout_s else policy.timeout_s  # _pipeline_timeout's, less 1 s
    deadline = started + timeout_s

    method, url = args.method, args.url
    content: bytes | None
    user_headers: dict[str, str] = args.headers  # never changed in place (a redirect makes a new dict)
    if args.json_body is not None:
        content = json_module.dumps(args.json_body).encode()
        user_headers = {"Content-Type": "application/json", **user_headers}
    else:
        content = args.body.encode() if args.body is not None else None
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
    first = guard.check_target(url)  # refuse before touching any connection pool
    # The running loop, found once per call (the pipeline's deadline reuses it): its client, without
    # a coroutine when the service and the client already exist (every call but a loop's first).
    loop = ctx.loop
    svc = SERVICES.get(runtime)
    client = svc.clients.current(loop) if svc is not None else None
    if svc is None or client is None:
        svc = await service_for(ctx)
        client = await svc.clients.get(loop)
    cap = policy.max_response_bytes
    redirects: list[dict[str, Any]] = []
    cookies: httpx.Cookies | None = None  # set by this call's responses, for its own redirect hops only
    target = first
    attempt = 0
    while True:
        try:
            auth = svc.auth_headers(target, url) if svc.has_auth else None
        except ActionError as exc:
            if redirects:
                exc.message = f"redirect to {url} refused: {exc.message}"
                exc.data = {"redirects": redirects}
            raise
        headers: Headers
        if user_headers or auth or cookies:
            headers = own = svc.base_headers.copy()
            if user_headers:
                own.update(
                    user_headers
                    if target is first or (target.scheme, target.host, target.port) == (first.scheme, first.host, first.port)
                    else {k: v for k, v in user_headers.items() if k.lower() in _CROSS_ORIGIN_HEADERS}
                )
            if auth:
                own.update(auth)
            if cookies:
                _add_cookie_header(own, cookies, method, url)
        else:  # nothing to add: the service's read-only view, not a copy per hop
            headers = svc.fixed_headers
        reply = await _send(
            ctx,
            loop,
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
                httpx.Response(reply.status, headers=reply.raw_headers, request=httpx.Request(method, parse_url(url)))
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
    return _result(reply, url, hdrs, redirects, cap, args.method, elapsed_ms, attempt, runtime.redactor)


def _add_cookie_header(headers: CIMultiDict[str], cookies: httpx.Cookies, method: str, url: str) -> None:
    """The cookies this call's earlier hops set that RFC 6265 sends to ``url`` (a caller's own Cookie wins)."""
    if "Cookie" in headers:
        return
    probe = httpx.Request(method, parse_url(url))
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
    loop: asyncio.AbstractEventLoop,
    client: Client,
    method: str,
    url: str,
    target: Target,
    headers: Headers,
    content: bytes | None,
    deadline: float,
    timeout_s: float,
    cap: int,
    *,
    unsafe: bool,
    first_hop: bool,
) -> Reply:
    """One request (plus connect retries), read up to ``cap`` bytes, all within ``deadline``.

    ``unsafe``: the call's method is not idempotent (POST, PATCH): a failure after its request may
    have been transmitted (a timeout, a broken exchange), or on a later hop (the first already
    acted), is reported as an unknown outcome, never as retryable. ``loop``: the running loop (the call's)."""
    acted = unsafe and not first_hop  # an earlier hop of this call already reached the server
    try:
        parse_url(url)  # one URL grammar (httpx's, cached) for both layers, as check_target's companion
    except (httpx.InvalidURL, ValueError) as exc:
        raise ActionError("invalid_input", f"invalid URL {url!r}: {exc}") from None
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if acted:
                raise _unknown_outcome(method, url, f"the redirect could not be followed within {timeout_s:g} s")
            raise ActionError("timeout", f"no response within {timeout_s:g} s", retryable=True)
        # A child of the call's span (the current one); nothing nests under it, so it is not made current.
        # When our own provider records nothing, nobody can read it nor its ids (unlike the call's span,
        # whose ids name its log lines): it is the API's invalid span, made for nothing (was 5 us a call).
        runtime = ctx.runtime
        tracer = runtime.tracer
        span: Span
        if isinstance(tracer, AgentLegsTracer) and tracer.records_nothing():
            span = INVALID_SPAN
        else:
            attributes: dict[str, Any] = {
                HTTP_REQUEST_METHOD: method,
                URL_FULL: runtime.redactor.text(url.split("?", 1)[0]),  # query strings often carry keys
                SERVER_ADDRESS: target.host,
                SERVER_PORT: target.port,
            }
            if attempt:
                attributes[HTTP_REQUEST_RESEND_COUNT] = attempt
            span = tracer.start_span(f"HTTP {method}", kind=SpanKind.CLIENT, attributes=attributes)
        try:
            try:
                # The whole exchange, body included, ends at the deadline (a slow drip cannot stretch it).
                # The deadline is an entry of the loop's watchdog (as the pipeline's own, later one):
                # asyncio.timeout's semantics (its TimeoutError, a foreign cancellation propagates)
                # without a second TimerHandle, Timeout and copied context per call.
                watch = deadlines.begin(loop, loop.time() + remaining)
                try:
                    reply = await client.exchange(method, url, headers, content, cap, remaining)
                except BaseException as exc:
                    if deadlines.end(loop, watch, exc):
                        raise TimeoutError from None
                    raise
                deadlines.end(loop, watch, None)
            except ConnectFailed as exc:
                span.set_status(Status(StatusCode.ERROR, "ConnectError"))
                tls = tls_failure(exc)
                span.set_attribute(ERROR_TYPE, "tls" if tls else "ConnectError")
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
                span.set_attribute(ERROR_TYPE, "timeout")
                if unsafe:
                    raise _unknown_outcome(method, url, f"no complete response within {timeout_s:g} s") from None
                raise ActionError("timeout", f"{method} {url} did not complete within {timeout_s:g} s", retryable=True) from None
            except ExchangeFailed as exc:
                cause = exc.__cause__
                span.set_status(Status(StatusCode.ERROR, type(cause or exc).__name__))
                span.set_attribute(ERROR_TYPE, type(cause or exc).__name__)
                if is_invalid_url(cause):
                    raise ActionError("invalid_input", f"invalid URL {url!r}: {cause}") from None
                if unsafe:
                    raise _unknown_outcome(method, url, f"the exchange failed ({exc})", "failed") from None
                raise ActionError("failed", f"{method} {url} failed: {exc}", retryable=True) from None
            if span is not INVALID_SPAN:  # the invalid span takes nothing: no call to it
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, reply.status)
                if reply.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute(ERROR_TYPE, str(reply.status))
            return reply
        finally:
            if span is not INVALID_SPAN:
                span.end()


def _result(
    reply: Reply,
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
    mime, charset = _content_type(ctype) if len(ctype) <= _CACHED_CTYPE_CHARS else _parse_content_type(ctype)
    url = _shown_short_url(url) if len(url) <= _CACHED_URL_CHARS else str(parse_url(url))  # _shown_url, inline
    text, parsed = _render(body, mime, charset, reply.truncated, url, redactor)
    lines = [f"HTTP {reply.status} {reply.reason}  {method} {url}"]
    if redirects:
        lines.append(f"(after {len(redirects)} redirect(s) from {redirects[0]['from']})")
    for h in _SHOWN_HEADERS:  # a loop, not a comprehension: no function and closure cell per result
        if h in headers:
            lines.append(f"{h}: {headers[h]}")
    if reply.truncated:
        lines.append(f"[response truncated at {cap} bytes (policy.http.max_response_bytes); the rest was not read]")
    lines.append("")
    lines.append(text)
    data: dict[str, Any] = {
        "status": reply.status,
        "reason": reply.reason,
        "url": url,
        # _plain_headers' dict is this result's own: shown as it is unless a cookie must be left out
        "headers": {k: v for k, v in headers.items() if k != "set-cookie"} if "set-cookie" in headers else headers,
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


def _parse_content_type(ctype: str) -> tuple[str, str]:
    """The media type (lower case, no parameters) and the charset (``utf-8`` when none is named)."""
    charset = _CHARSET.search(ctype)
    return ctype.split(";", 1)[0].strip().lower(), charset.group(1) if charset else "utf-8"


@functools.lru_cache(maxsize=256)  # servers repeat a few values; only short ones are kept (the server chooses them)
def _content_type(ctype: str) -> tuple[str, str]:
    return _parse_content_type(ctype)


def _shown_url(url: str) -> str:
    """The URL as httpx writes it (costs more than the rest of the result): remembered when short."""
    return _shown_short_url(url) if len(url) <= _CACHED_URL_CHARS else str(parse_url(url))


@functools.lru_cache(maxsize=1024)  # the model chooses URLs: only short ones are kept (1,024 long ones would pin megabytes)
def _shown_short_url(url: str) -> str:
    return str(parse_url(url))


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
    # A NUL in the first 4 KiB: found by memchr, without a copy of that head (find's own bounds)
    if not is_text or body.find(0, 0, 4096) >= 0:
        return f"[binary content: {len(body)} bytes of {mime or 'unknown type'}]", None
    try:
        text = body.decode(encoding, "replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    if truncated and redactor is not None:
        # Only the head was read: a secret straddling the cap must not leave its prefix (before markdown).
        text = redactor.text(text, cut=True)
    if mime in ("text/html", "application/xhtml+xml"):
        return html_to_markdown(text, base_url=url), None
    return text, None
