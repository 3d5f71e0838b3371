"""A pool of Playwright servers (``settings.browser.ws_endpoints``): where each new browser session goes.

Each server is one ``playwright run-server --unsafe``; we hold one connection (one browser) per server,
opened when the first session is placed there, and one context per session on it, sent through that
session's own egress proxy on our side, with a random credential per session (a remote browser).

Invariants:

* A new session goes to the live server with the fewest live sessions (ties: the first listed); the
  count is taken before any ``await``, so sessions opened at once spread rather than pile onto one.
* A server that cannot be reached, refuses (its browser lacks the WebRTC flags: ``_launcher``) or dies
  is *down*: no new session is placed on it for ``settings.browser.ws_retry_s`` (doubled at each
  further failure, up to 8 times), then it is tried again. A new session goes to another server
  meanwhile; only when every server is down is the call ``unavailable``, naming each one and why.
* The sessions of a server that died are lost (their tab, their unsaved cookies); each one's next call
  (or the call in flight) is ``unavailable``, retryable, naming the server and the fix; the call after
  that opens the session again on a live server (a profile's cookies come back from its last save).
* One connection attempt per server at a time, shared by every call waiting for it and not cancelled
  when one of them gives up (``asyncio.shield``); each attempt is bounded by ``policy.browser.timeout_s``.
* Server names in messages are the endpoint without user info or query (``label``): a token in the URL
  is not repeated to the model.

Threat model: a server (or the network to it) fails, hangs or is replaced by one without our flags:
every case is a bounded, named ``unavailable`` and the other servers carry on. The pages it renders are
hostile as ever: the per-session proxy on our side decides every request (``_service``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..._errors import ActionError
from ._launcher import connect_server

if TYPE_CHECKING:
    from ..._runtime import Runtime

__all__ = ["PlaywrightServer", "ServerPool", "label"]

_MAX_BACKOFF_FACTOR = 8


def label(endpoint: str) -> str:
    """The endpoint as messages show it: scheme, host, port and path; no user info, no query."""
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(eq=False)
class PlaywrightServer:
    """One server of the pool: its connection, its live sessions, and when it may be tried again."""

    endpoint: str
    browser: Any = None
    sessions: set[str] = field(default_factory=set)
    failures: int = 0  # consecutive failures (the back-off doubles with each)
    down_until: float = 0.0  # loop time before which no new session is placed here
    reason: str = ""  # why it is down
    connecting: asyncio.Task[Any] | None = None

    @property
    def label(self) -> str:
        return label(self.endpoint)

    def connected(self) -> bool:
        return self.browser is not None and bool(self.browser.is_connected())


class ServerPool:
    """The servers of ``settings.browser.ws_endpoints`` and which session lives on which."""

    def __init__(self, runtime: Runtime, pw: Any, on_lost: Any) -> None:
        self.runtime = runtime
        self._pw = pw
        self._on_lost = on_lost  # called with (server, reason) when a connected server goes away
        self.servers = [PlaywrightServer(e) for e in runtime.settings.browser.ws_endpoints]
        self.closing = False

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _fix(self, server: PlaywrightServer, others: bool = True) -> str:
        return (
            f"Not fixable by the model: tell the user to check that the Playwright server at {server.label} is "
            "running (`playwright run-server --port PORT --unsafe`, the same Playwright version as the client) "
            "and reachable from the agent's machine. Retrying later may work"
            + (": new sessions go to the other servers." if others and len(self.servers) > 1 else ".")
        )

    def _mark_down(self, server: PlaywrightServer, reason: str) -> None:
        server.failures += 1
        base = self.runtime.settings.browser.ws_retry_s
        backoff = min(base * 2 ** (server.failures - 1), base * _MAX_BACKOFF_FACTOR)
        server.down_until = self._now() + backoff
        server.reason = reason

    async def place(self, session: str) -> PlaywrightServer:
        """A connected server for a new session (the fewest live sessions first), which now counts it."""
        tried: list[PlaywrightServer] = []
        while True:
            now = self._now()
            up = [s for s in self.servers if s not in tried and s.down_until <= now]
            if not up:
                raise self._all_down(tried)
            server = min(up, key=lambda s: len(s.sessions))  # min() keeps the first of equals
            server.sessions.add(session)  # counted before the await: sessions opened at once spread
            try:
                await self._connect(server)
            except ActionError:
                server.sessions.discard(session)
                tried.append(server)
                continue
            except BaseException:
                server.sessions.discard(session)
                raise
            return server

    def _all_down(self, tried: list[PlaywrightServer]) -> ActionError:
        now = self._now()
        parts = []
        for s in self.servers:
            wait = max(0.0, s.down_until - now)
            again = f"; tried again in {wait:.0f} s" if wait >= 1 else ""
            parts.append(f"{s.label} ({s.reason or 'down'}{again})")
        first = tried[0] if tried else self.servers[0]
        return ActionError(
            "unavailable",
            f"no Playwright server of settings.browser.ws_endpoints can take a session: {'; '.join(parts)}",
            retryable=True,
            hint=self._fix(first, others=False),
        )

    async def _connect(self, server: PlaywrightServer) -> None:
        """Connect once (shared by concurrent callers); a failure marks the server down and is ``unavailable``."""
        if server.connected():
            return
        if server.connecting is None:
            server.connecting = asyncio.ensure_future(self._open(server))
        task = server.connecting
        try:
            await asyncio.shield(task)
        except ActionError:
            raise
        except Exception as exc:  # the task's own failure is an ActionError; anything else is a bug
            raise ActionError(
                "unavailable",
                f"the Playwright server at {server.label} failed: {_first_line(exc)}",
                retryable=True,
                hint=self._fix(server),
            ) from None

    async def _open(self, server: PlaywrightServer) -> None:
        timeout_s = self.runtime.policy.browser.timeout_s
        try:
            browser = await connect_server(self.runtime, self._pw, server.endpoint, timeout_s)
        except BaseException as exc:
            if isinstance(exc, ActionError):  # refused: its browser runs without our flags
                reason = exc.message
                hint = exc.hint
            else:
                reason = f"cannot connect: {_first_line(exc)}"
                hint = self._fix(server)
            self._mark_down(server, reason)
            server.connecting = None
            if not isinstance(exc, Exception):
                raise
            raise ActionError(
                "unavailable", f"the Playwright server at {server.label} is unavailable: {reason}", retryable=True, hint=hint
            ) from None
        server.browser = browser
        server.failures, server.reason, server.connecting = 0, "", None
        browser.on("disconnected", lambda _: self._disconnected(server, browser))

    def _disconnected(self, server: PlaywrightServer, browser: Any) -> None:
        if server.browser is not browser:
            return  # an older connection, already replaced
        server.browser = None
        reason = "its connection closed (the server stopped or died)"
        if not self.closing:
            self._mark_down(server, reason)
        lost = set(server.sessions)
        server.sessions.clear()
        self._on_lost(server, lost)

    def unavailable(self, server: PlaywrightServer, what: str, effect: str | None = None) -> ActionError:
        """The error of a call whose session was on ``server`` when it died."""
        maybe = f"; {effect} may have taken effect or not" if effect else ""
        return ActionError(
            "unavailable",
            f"the Playwright server at {server.label} went away ({server.reason or 'its connection closed'}): "
            f"{what}{maybe}; the next call opens this session again on a live server",
            retryable=not effect,
            hint=self._fix(server),
        )

    def release(self, server: PlaywrightServer, session: str) -> None:
        server.sessions.discard(session)

    async def aclose(self) -> None:
        self.closing = True
        for server in self.servers:
            if server.connecting is not None:
                server.connecting.cancel()
                with contextlib.suppress(BaseException):
                    await server.connecting
            browser, server.browser = server.browser, None
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.close()
