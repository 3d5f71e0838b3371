"""Login by token, the session cookie, and the checks on every request.

* ``GET /any/path?token=T`` with the right token (compared in constant time) sets the session cookie
  and redirects to the same path without the token (it leaves the address bar and the history).
* Every other request needs the cookie: ``HttpOnly``, ``SameSite=Strict``, ``Path=/``; its value is a
  random session id signed with a key that lives only in this process (HMAC-SHA256, checked in
  constant time), so restarting the console logs everybody out. No cookie: 401.
* Every state-changing request (anything but GET/HEAD) also needs: no foreign ``Origin`` (it must be
  this console's own origin), no ``Sec-Fetch-Site: cross-site``/``same-site``, and the CSRF token of
  its session in the ``X-CSRF-Token`` header (the page sends it; another site cannot read it). Any
  failure is a 403 that says which check failed, and nothing is decided.
* Bound to loopback, the ``Host`` header must name a loopback host (a DNS-rebinding page gets 400).
* Every response carries a strict CSP (scripts from this origin only, no inline script), refuses to be
  framed (clickjacking the Approve button), sends no referrer and is not cached.

Limit: browsers send a host's cookies to every port of it, so a server that another local user runs
on 127.0.0.1 receives the cookie when this browser visits it (as for Jupyter); on a shared machine use
a browser profile of your own for the console.

Static files (htmx, the style sheet) are public: they hold nothing about the deployment.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import URL
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from ._config import is_loopback

__all__ = ["CSRF_HEADER", "Auth", "AuthMiddleware", "cookie_name"]
CSRF_HEADER = "x-csrf-token"
_SAFE = ("GET", "HEAD")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def cookie_name(port: int) -> str:
    """Browsers do not keep cookies apart by port: one name per port keeps two consoles apart."""
    return f"agent_legs_console_{port}"


class Auth:
    """The token and the signing key of one console process."""

    def __init__(self, token: str) -> None:
        self._token = hashlib.sha256(token.encode()).digest()
        self._key = secrets.token_bytes(32)

    def token_ok(self, given: str) -> bool:
        # Both sides hashed to 32 bytes first: compare_digest then leaks nothing, not even the length.
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._token)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def new_cookie(self) -> str:
        sid = secrets.token_urlsafe(24)
        return f"{sid}.{self._sign('session', sid)}"

    def session_of(self, cookie: str | None) -> str | None:
        """The session id of a valid cookie, else ``None``."""
        if not cookie or "." not in cookie:
            return None
        sid, _, mac = cookie.rpartition(".")
        return sid if hmac.compare_digest(mac, self._sign("session", sid)) else None

    def csrf_token(self, sid: str) -> str:
        return self._sign("csrf", sid)

    def csrf_ok(self, sid: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token(sid).encode())


class AuthMiddleware:
    """The checks above, in front of the whole application."""

    def __init__(self, app: ASGIApp, auth: Auth, loopback_only: bool, cookie: str) -> None:
        self.app, self.auth, self.loopback_only, self.cookie = app, auth, loopback_only, cookie

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        response = self._check(HTTPConnection(scope), scope)
        if response is not None:
            await response(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)

    def _check(self, conn: HTTPConnection, scope: Scope) -> Response | None:
        host = (conn.url.hostname or "").lower()
        if self.loopback_only and not is_loopback(host):
            return PlainTextResponse(f"refused: Host {host!r} is not this loopback console (DNS rebinding?)", 400)
        if conn.url.path.startswith("/static/"):
            return None
        token = conn.query_params.get("token")
        if token is not None:
            if not self.auth.token_ok(token):
                return _unauthorized("wrong token")
            rest = urlencode([(k, v) for k, v in conn.query_params.multi_items() if k != "token"])
            target = str(URL(path=conn.url.path, query=rest))
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(self.cookie, self.auth.new_cookie(), httponly=True, samesite="strict", path="/")
            return redirect
        sid = self.auth.session_of(conn.cookies.get(self.cookie))
        if sid is None:
            return _unauthorized("no valid session cookie")
        scope.setdefault("state", {})["console_sid"] = sid
        if scope["method"] in _SAFE:
            return None
        origin = conn.headers.get("origin")
        own = f"{conn.url.scheme}://{conn.url.netloc}"
        if origin is not None and origin != own:
            return _forbidden(f"cross-site request refused: Origin {origin} is not {own}")
        if conn.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return _forbidden(f"cross-site request refused: Sec-Fetch-Site is {conn.headers['sec-fetch-site']}")
        if not self.auth.csrf_ok(sid, conn.headers.get(CSRF_HEADER)):
            return _forbidden("missing or wrong CSRF token: reload the console page and decide again")
        return None


def _unauthorized(why: str) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Agent Legs console: log in</title><h1>401: log in</h1>"
        f"<p>{why}. Open the login URL that <code>agent-legs console</code> printed "
        "(<code>http://127.0.0.1:PORT/?token=...</code>); the token is <code>--token</code> or "
        "<code>$AGENT_LEGS_CONSOLE_TOKEN</code>.</p>",
        status_code=401,
    )


def _forbidden(why: str) -> Response:
    return PlainTextResponse(f"refused (nothing was decided): {why}", status_code=403)
