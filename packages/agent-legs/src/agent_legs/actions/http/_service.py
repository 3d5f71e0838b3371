"""``HttpService``: per-host credentials and one guard-pinned client per event loop.

The action is ``inline``: it runs on the caller's own event loop (no hop to the runtime thread, which
cost more than the request itself on a local API). Connections belong to a loop, so the service keeps
one pinned client per loop in a ``PerLoop`` holder (``agent_legs._loops``): made on first use there,
closed when that loop shuts down or when ``Legs`` closes, whichever comes first. Started services are
found by runtime (``service_for``), so calls on other loops need no hop either. A call finds the
service and its loop's client without a coroutine once both exist (``SERVICES``, ``PerLoop.current``).

Base headers are fixed once started: a hop with nothing to add (no header of the caller's, no
credential, no cookie) sends their read-only view, ``fixed_headers``, shared by every call; a hop
that adds any sends a copy of its own, so nothing one call adds can reach another.

Credentials (``settings.http.auth``): an entry's ``hosts`` are host rules parsed by the one host parser
(``agent_legs._matching.parse_host_rule``: a name, IP or glob with an optional ``:port``, in the same
canonical form as the egress guard's rules: case, trailing dots, IDNA and numeric IPv4 spellings do not
matter). Its headers are resolved from the secret store per request (never stored here) and travel only
over https, to a loopback name, or with the entry's ``allow_http``: a plain-http request to a listed host
is refused rather than sent without them (it could otherwise be made to fall back silently, or the agent
retry it with the secret in its own headers).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import weakref
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from ..._context import ActionContext
from ..._egress import Target
from ..._errors import ActionError
from ..._loops import PerLoop
from ..._matching import HostRule, parse_host_rule
from ..._service import Service
from ._client import AiohttpClient, Client, HttpxClient
from ._settings import HttpAuth

if TYPE_CHECKING:
    from ..._runtime import Runtime

__all__ = ["SERVICES", "HttpService", "auth_rules", "is_loopback", "service_for"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

# Started services by runtime: inline calls on other loops find theirs without a hop.
SERVICES: weakref.WeakKeyDictionary[Runtime, HttpService] = weakref.WeakKeyDictionary()


class HttpService(Service):
    """Credentials per host, and one guard-pinned client per event loop."""

    async def start(self) -> None:
        settings = self.runtime.settings.http
        self._auth = [(auth_rules(a), a) for a in settings.auth]
        self.has_auth = bool(self._auth)
        self.base_headers: CIMultiDict[str] = CIMultiDict(
            {"User-Agent": settings.user_agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        )
        # What a hop with no header of its own sends: a read-only view (shared by every call, so no
        # layer can add to it), instead of a copy per hop. Copy ``base_headers`` to add anything.
        self.fixed_headers: CIMultiDictProxy[str] = CIMultiDictProxy(self.base_headers)
        self.clients: PerLoop[Client] = PerLoop(
            self.new_client,
            lambda client: client.aclose(),
            lambda client: client.abandon(),
            home=self.runtime.loop,
            what="an HTTP client",
        )
        await self.client_for_loop()
        SERVICES[self.runtime] = self

    def new_client(self, ssl_context: ssl.SSLContext | None = None) -> Client:
        settings = self.runtime.settings.http
        if settings.transport == "aiohttp":  # its session sends the fixed headers when a hop adds none
            return AiohttpClient(self.runtime.egress, settings.max_connections, ssl_context, self.fixed_headers)
        return HttpxClient(self.runtime.egress, settings.max_connections, ssl_context)

    async def client_for_loop(self) -> Client:
        """The pinned client of the running loop (created on first use there)."""
        return await self.clients.get()

    async def aclose(self) -> None:
        SERVICES.pop(self.runtime, None)
        await self.clients.aclose()

    def auth_headers(self, target: Target, url: str = "") -> dict[str, str]:
        """Configured credentials for this host (secrets resolved here, never stored).

        An entry's headers travel only over https, to a loopback name (127.0.0.0/8, ::1,
        localhost), or with the entry's ``allow_http``; a plain-http request to a host an entry
        lists is refused (``denied``) rather than sent without them: it could otherwise be made
        to fall back silently, or the agent retry it with the secret in its own headers."""
        headers: dict[str, str] = {}
        for index, (rules, auth) in enumerate(self._auth):
            if any(rule.matches(target.host, target.port) for rule in rules):
                if target.scheme != "https" and not auth.allow_http and not is_loopback(target.host):
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


async def service_for(ctx: ActionContext) -> HttpService:
    """The runtime's started service (started once, where services live, on first use)."""
    svc = SERVICES.get(ctx.runtime)
    if svc is not None:
        return svc
    if ctx.runtime.in_loop_thread:
        return await ctx.service(HttpService)
    # First call from another loop: start the shared service where services live (once).
    return await asyncio.wrap_future(ctx.runtime.submit(ctx.runtime.service(HttpService)))


def auth_rules(auth: HttpAuth) -> list[HostRule]:
    """The entry's host rules, by the egress guard's parser (so both read a host the same way)."""
    return [parse_host_rule(h) for h in auth.hosts]


def is_loopback(host: str) -> bool:
    """A loopback literal or ``localhost`` (which the egress guard only lets through to loopback)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
