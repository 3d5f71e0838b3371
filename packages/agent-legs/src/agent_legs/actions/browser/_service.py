"""``BrowserService``: one browser per ``Legs``, one context per session, every request through the
session's own egress proxy.

Each session's BrowserContext reaches the network only through its own ``EgressProxy`` (the egress
guard in front of every navigation, redirect, sub-resource, iframe, popup and WebSocket; Chromium
resolves nothing itself, and denials are attributed to the session); service workers are blocked
(they would outlive the page and fetch on their own).

Invariants:

* Each proxy answers only its own session's browser context: our own browser on loopback is told
  apart by its user (the peer's uid), any other by a random user and password per session
  (Playwright's proxy credentials); everyone else gets ``407``. It listens on
  ``settings.browser.proxy_bind`` (127.0.0.1 by default; another address only for a browser on another
  host, which must then be told ``settings.browser.proxy_host``).
* Concurrent first calls of one session share one context; a crashed browser is relaunched once,
  however many calls notice it, and each session it took is told what was lost (its page, its
  unsaved cookies; a profile's cookies come back from their last save).
* Page loads, and opening a context and tab, take one of ``max_loads`` slots
  (``settings.browser.max_concurrent_loads``, a first-come first-served queue: ``_slots``): past a few
  loads per core Chromium collapses rather than slows.
* With ``settings.browser.ws_endpoints`` each new session is placed on a server of the pool (``_pool``);
  a server that dies takes only its own sessions, whose next call is ``unavailable`` naming it (the
  session is then opened again elsewhere); nothing is relaunched here.
* Closing a session saves its profile, closes its context and its proxy; closing the service leaves
  no browser, proxy or download directory behind.

Threat model: a hostile page tries to reach hosts the policy refuses (directly, through popups,
workers, redirects, WebSockets): the proxy is its only way out. Another local user or host tries to
use a session's proxy as an open relay: it is refused (``407``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..._egress import is_loopback_host
from ..._egress_proxy import EgressProxy, peer_uid_supported
from ..._errors import ActionError
from ..._service import Service
from ..._telemetry._semconv import AGENT_LEGS_BROWSER_SERVER, BROWSER_PROFILE
from ._blocked import denial_for
from ._deadline import in_background, remaining
from ._files import Downloads
from ._launcher import launch
from ._pool import PlaywrightServer, ServerPool
from ._session import BrowserSession, atomic_write, count_commit, note_popup, profile_name
from ._slots import LoadSlots

__all__ = ["BrowserService"]


def _proxy_host(host: str) -> str:
    """The proxies' address as the browser dials it (``settings.browser.proxy_host``, else the bind address)."""
    if host in ("0.0.0.0", "::", ""):
        raise ActionError(
            "invalid_input",
            f"settings.browser.proxy_bind is {host or 'empty'!r}: set "
            "settings.browser.proxy_host to the address the browser reaches this machine at",
        )
    return f"[{host}]" if ":" in host else host


class BrowserService(Service):
    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self.downloads = Downloads(self.runtime)
        self._pw = await async_playwright().start()
        self.sessions: dict[str, BrowserSession] = {}
        self.browser: Any = None
        self.lost: dict[str, str] = {}  # session -> what a crash took from it
        self.remote = False
        self.launch_lock = asyncio.Lock()  # held around ensure_browser: one relaunch, however many calls notice a crash
        self._creating: dict[str, asyncio.Lock] = {}
        # Past a few loads per core Chromium collapses rather than slows (64 sessions on 2 cores: every load
        # timed out, each timeout's fresh tab adding work); queued loads finish in turn instead.
        self.max_loads = self.runtime.settings.browser.max_concurrent_loads or 2 * (os.cpu_count() or 1)
        self.loads = LoadSlots(self.max_loads)
        # A pool of Playwright servers: sessions placed by load; a dead server's sessions are told (``gone``).
        self.pool: ServerPool | None = None
        self.gone: dict[str, tuple[PlaywrightServer, str]] = {}  # session -> the server it was lost with, and what
        if self.runtime.settings.browser.ws_endpoints:  # no browser of our own: servers are connected as needed
            self.pool = ServerPool(self.runtime, self._pw, self._server_lost)
            self.remote = self.downloads.remote = True
            return
        try:
            await self._launch()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._pw.stop()
            raise

    # -- browser -------------------------------------------------------------------------------------
    async def _launch(self) -> None:
        launched = await launch(self.runtime, self._pw)
        self.browser = launched.browser
        self.remote = self.downloads.remote = launched.remote
        self.downloads.directory = launched.downloads_dir
        self.browser.on("disconnected", lambda _: self._on_disconnect())

    def _on_disconnect(self) -> None:
        for name, s in self.sessions.items():
            kept = f" (cookies of profile {s.profile!r} are restored from its last save)" if s.profile else ""
            self.lost[name] = (
                f"the browser crashed and was relaunched: the open page {s.page.url} and this "
                f"session's unsaved cookies and history were lost{kept}"
            )
        self.browser = None

    def _server_lost(self, server: PlaywrightServer, names: set[str]) -> None:
        """A server of the pool went away: its sessions are gone; each one's next call is told (``gone``)."""
        for name in names:
            s = self.sessions.pop(name, None)
            if s is None:
                continue
            s.gone = True
            in_background(s.proxy.aclose())
            kept = f" (cookies of profile {s.profile!r} come back from its last save)" if s.profile else ""
            self.gone[name] = (
                server,
                f"this session's open page {s.page.url} and its unsaved cookies and history were lost{kept}",
            )

    def lost_on_server(self, s: BrowserSession, effect: str | None = None) -> ActionError:
        """The ``unavailable`` error of a call whose session's server died (said once: the next call re-opens it)."""
        server, what = self.gone.pop(s.name, (s.server, "this session's page was lost"))
        assert server is not None
        assert self.pool is not None
        return self.pool.unavailable(server, what, effect)

    async def ensure_browser(self) -> None:
        """A connected browser: relaunched (its sessions dropped) when it crashed. Callers hold ``launch_lock``.
        A pool of servers has no browser of its own: each session's server is chosen when it opens."""
        if self.pool is not None or (self.browser is not None and self.browser.is_connected()):
            return
        for s in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await s.proxy.aclose()
        self.sessions.clear()
        if self.browser is not None:
            with contextlib.suppress(Exception):
                await self.browser.close()
        self.browser = None
        self.downloads.reset()
        await self._launch()

    # -- sessions ------------------------------------------------------------------------------------
    def _profile_path(self, name: str) -> Path:
        return self.runtime.state_dir / "browser-profiles" / name / "storage_state.json"

    async def session(self, name: str) -> BrowserSession:
        async with self.launch_lock:  # one relaunch after a crash, however many calls notice it
            await self.ensure_browser()
        gone = self.gone.pop(name, None)
        if gone is not None and self.pool is not None:  # its server died: say so once, then open it elsewhere
            raise self.pool.unavailable(*gone)
        existing = self.sessions.get(name)
        if existing is not None:
            return existing
        lock = self._creating.setdefault(name, asyncio.Lock())
        async with lock:  # concurrent first calls of one session share one context
            existing = self.sessions.get(name)
            if existing is not None:
                return existing
            try:
                return await self._new_session(name)
            finally:
                self._creating.pop(name, None)

    async def _new_session(self, name: str) -> BrowserSession:
        with self.runtime.tracer.start_as_current_span("browser new context") as span:
            settings = self.runtime.settings.browser
            # Nobody else may use the proxy (other local users; other hosts when it listens for a remote
            # browser): our own browser on loopback is told apart by its user, any other by a random credential
            # per session (which costs the page its HTTP cache: see _egress_proxy).
            by_user = not self.remote and is_loopback_host(settings.proxy_bind) and peer_uid_supported()
            credentials = None if by_user else (f"s{secrets.token_hex(8)}", secrets.token_urlsafe(24))
            advertised = _proxy_host(settings.proxy_host or settings.proxy_bind)
            proxy = await EgressProxy(
                self.runtime.egress, host=settings.proxy_bind, credentials=credentials, peer_uid=os.getuid() if by_user else None
            ).start()
            server = f"http://{advertised}:{proxy.port}"
            login = {"username": credentials[0], "password": credentials[1]} if credentials else {}
            template = self.runtime.settings.browser.profile
            profile = profile_name(template, name) if template else None
            state: dict[str, Any] | None = None
            if profile:
                span.set_attribute(BROWSER_PROFILE, profile)
                path = self._profile_path(profile)
                with contextlib.suppress(FileNotFoundError, ValueError):
                    state = json.loads(await asyncio.to_thread(path.read_text))
            context: Any = None
            placed: PlaywrightServer | None = None
            try:
                browser = self.browser
                if self.pool is not None:  # the server with the fewest live sessions (connected on first use)
                    placed = await self.pool.place(name)
                    browser = placed.browser
                    span.set_attribute(AGENT_LEGS_BROWSER_SERVER, placed.label)
                # A new context and tab start a renderer: as much work for Chromium as a page load, so they
                # take a load slot too (64 sessions opening at once otherwise swamp it: see benchmarks.md).
                async with self.loads, asyncio.timeout(remaining(self.runtime.policy.browser.timeout_s)):
                    # the tab's time starts when the slot is granted (the queue's wait is not counted: ``_slots``)
                    context = await browser.new_context(
                        # loopback through the proxy too
                        proxy={"server": server, "bypass": "<-loopback>", **login},
                        service_workers="block",
                        accept_downloads=True,
                        storage_state=state,
                    )
                    timeout_ms = self.runtime.policy.browser.timeout_s * 1000
                    context.set_default_timeout(timeout_ms)
                    page = await context.new_page()
            except BaseException as exc:
                await proxy.aclose()
                if placed is not None and self.pool is not None:
                    self.pool.release(placed, name)
                if context is not None:  # cut short (the call's deadline) after the context was made:
                    in_background(context.close())  # closed without holding the call past its deadline
                died = placed is not None and not placed.connected() and not isinstance(exc, ActionError)
                if died and placed is not None and self.pool is not None and isinstance(exc, Exception):
                    raise self.pool.unavailable(placed, "this session's tab could not be opened") from None
                raise
        s = BrowserSession(
            name, self, context, page, proxy, profile, saved_state=json.dumps(state) if state else None, server=placed
        )
        context.on("page", lambda p: note_popup(s, p))
        self._attach(s, page)
        self.sessions[name] = s
        return s

    async def new_tab(self, s: BrowserSession) -> None:
        s.opening = True  # the context's "page" event fires before new_page() returns: not a popup
        try:
            s.page = await s.context.new_page()  # no load slot: a timed-out load replaces its tab holding one
        finally:
            s.opening = False
        self._attach(s, s.page)
        s.md_cache = None

    def _attach(self, s: BrowserSession, page: Any) -> None:
        page.on("download", lambda d: self._on_download(s, d))
        page.on("framenavigated", lambda f: count_commit(s, f))

    def _on_download(self, s: BrowserSession, download: Any) -> None:
        s.downloads.append(asyncio.ensure_future(self.downloads.save(s, download)))
        s.changed.set()

    async def adopt_popups(self, s: BrowserSession, adopt: bool) -> None:
        """New tabs: the one a click opened becomes the session's page; others are closed."""
        popups, s.popups = s.popups, []
        for i, page in enumerate(popups):
            if adopt and i == len(popups) - 1 and not page.is_closed():
                with contextlib.suppress(Exception):
                    await page.wait_for_load_state(
                        "load", timeout=max(1.0, remaining(self.runtime.policy.browser.timeout_s) * 1000)
                    )
                denial = denial_for(s, page.url)
                if denial is None:
                    old, s.page = s.page, page
                    self._attach(s, page)
                    s.md_cache = None
                    s.events.append(f"the click opened a new tab ({page.url}); it is now this session's page")
                    with contextlib.suppress(Exception):
                        await old.close()
                    continue
                s.events.append(
                    f"the click opened a new tab to {denial.url}, blocked by the egress policy "
                    f"(rule: {denial.rule}); the tab was closed"
                )
            else:
                s.events.append(f"a popup or new tab ({page.url}) was closed; its requests went through the egress guard")
            with contextlib.suppress(Exception):
                await page.close()

    async def save_profile(self, s: BrowserSession) -> None:
        """Write the session's cookies and storage when they changed (atomically: a crash keeps the old file)."""
        if not s.profile:
            return
        state = json.dumps(await s.context.storage_state())
        if state == s.saved_state:
            return
        path = self._profile_path(s.profile)
        await asyncio.to_thread(atomic_write, path, state)
        s.saved_state = state

    async def close_session(self, session: str) -> None:
        self.gone.pop(session, None)
        s = self.sessions.pop(session, None)
        if s is None:
            return
        if s.server is not None and self.pool is not None:
            self.pool.release(s.server, session)
        with contextlib.suppress(Exception):
            await self.save_profile(s)
        with contextlib.suppress(Exception):
            await s.context.close()
        await s.proxy.aclose()

    async def aclose(self) -> None:
        for name in list(getattr(self, "sessions", {})):
            await self.close_session(name)
        downloads: Downloads | None = getattr(self, "downloads", None)
        if downloads is not None:
            downloads.stop_watching()
        with contextlib.suppress(Exception):
            if self.browser is not None:
                await self.browser.close()
        pool: ServerPool | None = getattr(self, "pool", None)
        if pool is not None:
            await pool.aclose()
        with contextlib.suppress(Exception):
            await self._pw.stop()
        if downloads is not None:
            downloads.remove_directory()
