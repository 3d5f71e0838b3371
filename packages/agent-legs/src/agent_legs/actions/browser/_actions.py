"""browser.*: Playwright-driven Chromium with one context per session and every request policed.

Each session's BrowserContext reaches the network only through its own ``EgressProxy`` (the egress
guard in front of every navigation, redirect, sub-resource, iframe, popup and WebSocket; Chromium
resolves nothing itself, and denials are attributed to the session). Top-level non-web schemes are
refused before ``goto`` (the proxy never sees them); service workers are blocked; WebRTC may not
leave outside the proxy. Pages are read as markdown with the form fields and selectors the model
can use.

Each proxy answers only its own session's browser context: a random user and password per session
(Playwright's proxy credentials), ``407`` for anyone else. It listens on ``settings.browser.proxy_bind``
(127.0.0.1 by default; another address only for a browser on another host). A remote browser
(``ws_endpoint``/``cdp_url``) is used only if its command line carries the WebRTC flags, the one channel
the proxy cannot see. Uploads are read from the workspace (its checks) and handed over as bytes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import logging
import mimetypes
import os
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..._context import ActionContext
from ..._egress import is_loopback_host
from ..._egress_proxy import DENIED_HEADER, Denial, EgressProxy, peer_uid_supported
from ..._errors import ActionError
from ..._markdown import html_to_markdown
from ..._models import ActionOutput, Artifact
from ..._registry import action
from ..._service import Service

log = logging.getLogger("agent_legs.browser")

CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebRTC UDP is the one channel the proxy cannot see; QUIC would bypass an HTTP proxy too
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-features=AutofillServerCommunication,MediaRouter",
    "--disable-domain-reliability",
    "--no-pings",
    "--disable-breakpad",
    "--disable-crash-reporter",  # crash dumps hold page memory: none written under $HOME
]
_REQUIRED_REMOTE_FLAGS = ("--webrtc-ip-handling-policy=disable_non_proxied_udp", "--force-webrtc-ip-handling-policy")
_SYSTEM_CHROMIUMS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable")
_UNAVAILABLE_HINT = (
    "Install Chromium (apt-get install -y chromium), set settings.browser.executable_path, or point "
    "settings.browser.ws_endpoint at a Playwright server (playwright run-server)."
)
_SCHEME_RULE = "browser schemes (only http and https pages, and about:blank, are opened)"
_TIMEOUT_SLACK_S = 10.0  # the runtime's deadline is later than the page timeout: we report it, not the runtime
_ELEMENT_TIMEOUT_S = 5.0  # how long click/fill wait for their element to appear (pages render, scripts run)
_BACKGROUND: set[asyncio.Future[None]] = set()  # fire-and-forget cleanups, kept referenced until done
# When the current call must be over (loop time): policy.browser.timeout_s bounds the whole call, opening the
# session's context and tab and waiting for a load slot included, not each step on its own.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("agent_legs_browser_deadline", default=None)
_MAY_HAVE_HAPPENED_HINT = (
    "Do not repeat it blindly: check first whether it took effect (browser_content, or open the "
    "page that shows the result), or ask the user."
)


def _in_background(coro: Any) -> None:
    """Run a cleanup without waiting for it (errors ignored), kept referenced until it is done."""

    async def quietly() -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await coro

    task = asyncio.ensure_future(quietly())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _remaining(total_s: float) -> float:
    """Seconds left of the current call's deadline (``total_s`` outside a call)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return total_s
    return max(0.0, deadline - asyncio.get_running_loop().time())


# One round trip reads everything the model needs: the HTML to convert (the main element when the page
# has a substantial one), title, base URL, and the visible form fields with selectors that work.
_READ_JS = r"""([sel, fmt]) => {
  const esc = (s) => CSS.escape(s);
  const unique = (s) => { try { return document.querySelectorAll(s).length === 1; } catch (e) { return false; } };
  const selectorFor = (e) => {
    if (e.id && unique('#' + esc(e.id))) return '#' + esc(e.id);
    const tag = e.tagName.toLowerCase();
    if (e.name) { const s = `${tag}[name="${e.name.replace(/["\\]/g, '\\$&')}"]`; if (unique(s)) return s; }
    const parts = []; let n = e;
    while (n && n.nodeType === 1 && n !== document.body && n !== document.documentElement) {
      if (n !== e && n.id && unique('#' + esc(n.id))) { parts.unshift('#' + esc(n.id)); break; }
      let i = 1, sib = n; while ((sib = sib.previousElementSibling)) if (sib.tagName === n.tagName) i++;
      parts.unshift(n.tagName.toLowerCase() + ':nth-of-type(' + i + ')');
      n = n.parentElement;
    }
    if (!parts.length || !parts[0].startsWith('#')) parts.unshift('body');
    return parts.join(' > ');
  };
  const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const describe = (e) => {
    const tag = e.tagName.toLowerCase();
    const type = (e.getAttribute('type') || (tag === 'button' ? 'submit' : tag === 'input' ? 'text' : '')).toLowerCase();
    let label = e.labels && e.labels.length ? e.labels[0].innerText : '';
    label = label || e.getAttribute('aria-label') || e.placeholder || (tag === 'button' ? e.innerText : '')
      || (type === 'submit' || type === 'button' ? e.value : '') || e.title || '';
    const f = {tag, type, selector: selectorFor(e), label: label.trim().replace(/\s+/g, ' ').slice(0, 80)};
    if (e.required) f.required = true;
    if (e.disabled) f.disabled = true;
    if (tag === 'select') f.options = Array.from(e.options).slice(0, 20).map(o => o.text.trim().slice(0, 40));
    else if (!['password', 'file', 'submit', 'button', 'reset'].includes(type) && tag !== 'button' && e.value)
      f.value = String(e.value).slice(0, 80);
    return f;
  };
  let scope = sel ? null : document.body || document.documentElement, main = false;
  if (sel) { try { scope = document.querySelector(sel); } catch (e) { return {error: String(e)}; } if (!scope) return null; }
  else {
    const m = document.querySelector('main, [role=main]');
    if (m && m.textContent.trim().length >= 200) { scope = m; main = true; }
  }
  const fields = sel || fmt !== 'markdown' ? [] : Array.from(document.querySelectorAll(
      'input:not([type=hidden]), textarea, select, button')).filter(visible).slice(0, 60).map(describe);
  return {url: location.href, title: document.title, base: document.baseURI, main, fields, links: document.links.length,
          html: scope && fmt !== 'text' ? scope.outerHTML : '', text: scope && fmt === 'text' ? scope.innerText : ''};
}"""
_CLICK_PROBE_JS = (
    "e => ({visible: !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length) && "
    "getComputedStyle(e).visibility !== 'hidden', navigates: !!(e.closest('a[href], area[href]') || "
    "(e.form && e.closest('button, input[type=submit], input[type=image]')))})"
)
_LINKS_JS = (
    "() => Array.from(document.querySelectorAll('a[href]')).slice(0, 500)"
    ".map(a => [(a.innerText || a.title || '').trim().replace(/\\s+/g, ' ').slice(0, 120), a.href])"
)


class NavigateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Absolute http(s) URL to open in this session's tab.")


class ContentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str | None = Field(
        None, description="CSS selector to read only that element (default: the page's main content, or the whole body)."
    )
    format: Literal["markdown", "text", "html"] = Field(
        "markdown", description="'markdown' (readable, with links and form fields), 'text' (visible text) or 'html'."
    )
    offset: int = Field(
        0, ge=0, description="Character offset to continue a long page (the previous result says which offset to pass)."
    )


class ClickInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str | None = Field(None, description="CSS selector of the element to click.")
    text: str | None = Field(None, description="Visible text of the element to click (used when no selector).")


class FillInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str = Field(description="CSS selector of the field (the page's form fields are listed with it).")
    value: str = Field(description="Text to type; for a file input, a workspace file path (several: one per line).")
    submit: bool = Field(False, description="Submit the form afterwards (presses Enter) and return the result page.")


class ScreenshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full_page: bool = Field(False, description="Capture the whole scrollable page instead of the viewport.")


class NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(eq=False)
class _Session:
    name: str
    service: BrowserService
    context: Any
    page: Any
    proxy: EgressProxy
    profile: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    events: list[str] = field(default_factory=list)
    popups: list[Any] = field(default_factory=list)
    downloads: list[asyncio.Future[None]] = field(default_factory=list)
    saved: list[Artifact] = field(default_factory=list)
    refused: set[Any] = field(default_factory=set)  # downloads cancelled for being too large
    md_cache: tuple[str, str, str] | None = None  # (base, html, markdown) of the last conversion
    opening: bool = False
    commits: int = 0  # main-frame navigations committed (how a click knows the page it started has arrived)
    recent_denials: collections.deque[Denial] = field(default_factory=lambda: collections.deque(maxlen=200))
    saved_state: str | None = None  # the profile's last written storage state (skip identical writes)


def _find_chromium(configured: str | None) -> str | None:
    """The system Chromium (or the configured one); ``None`` if there is none."""
    if configured:
        return configured if os.path.exists(configured) else None
    for candidate in _SYSTEM_CHROMIUMS:
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


def _proxy_host(host: str) -> str:
    """The proxies' address as the browser dials it (``settings.browser.proxy_host``, else the bind address)."""
    if host in ("0.0.0.0", "::", ""):
        raise ActionError(
            "invalid_input",
            f"settings.browser.proxy_bind is {host or 'empty'!r}: set "
            "settings.browser.proxy_host to the address the browser reaches this machine at",
        )
    return f"[{host}]" if ":" in host else host


def _profile_name(template: str, session: str) -> str:
    """``settings.browser.profile``; ``{session}`` in it gives each session its own profile."""
    name = template.replace("{session}", session)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")[:80] or "default"


class BrowserService(Service):
    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        self.sessions: dict[str, _Session] = {}
        self.browser: Any = None
        self.lost: dict[str, str] = {}  # session -> what a crash took from it
        self.remote = False
        self._downloads_dir: Path | None = None
        self._pending: dict[Any, _Session] = {}  # downloads in progress
        self._watcher: asyncio.Task[None] | None = None
        self._launch_lock = asyncio.Lock()
        self._creating: dict[str, asyncio.Lock] = {}
        # Past a few loads per core Chromium collapses rather than slows (64 sessions on 2 cores: every load
        # timed out, each timeout's fresh tab adding work); queued loads finish in turn instead.
        self.max_loads = self.runtime.settings.browser.max_concurrent_loads or 2 * (os.cpu_count() or 1)
        self.loads = asyncio.Semaphore(self.max_loads)
        try:
            await self._launch()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._pw.stop()
            raise

    # -- browser -------------------------------------------------------------------------------------
    async def _launch(self) -> None:
        settings = self.runtime.settings.browser
        chromium = self._pw.chromium
        args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
        with self.runtime.tracer.start_as_current_span("browser launch") as span:
            try:
                if settings.ws_endpoint:
                    # A Playwright server applies these only when started with --unsafe (or when its
                    # browser was pre-launched with them: `playwright launch-server`).
                    options = {
                        "args": args,
                        "headless": settings.headless,
                        **({"executablePath": settings.executable_path} if settings.executable_path else {}),
                    }
                    self.browser = await chromium.connect(
                        settings.ws_endpoint, headers={"x-playwright-launch-options": json.dumps(options)}
                    )
                    self.remote = True
                elif settings.cdp_url:
                    self.browser = await chromium.connect_over_cdp(settings.cdp_url)
                    self.remote = True
                else:
                    executable = self._executable()
                    span.set_attribute("browser.executable", executable)
                    self._downloads_dir = Path(tempfile.mkdtemp(prefix="agent-legs-downloads-"))
                    self.browser = await chromium.launch(
                        executable_path=executable, headless=settings.headless, args=args, downloads_path=str(self._downloads_dir)
                    )
            except ActionError:
                raise
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ActionError(
                    "unavailable", f"cannot start or reach a browser: {first}", retryable=True, hint=_UNAVAILABLE_HINT
                ) from None
            span.set_attribute("browser.version", self.browser.version)
            if self.remote:
                await self._check_remote_flags()
        self.browser.on("disconnected", lambda _: self._on_disconnect())

    async def _check_remote_flags(self) -> None:
        """A browser we did not launch must run with the flags that keep WebRTC UDP inside the proxy.

        A Playwright server drops client launch args unless started with ``--unsafe``, and a CDP browser has
        whatever its owner gave it: without these flags a page could send UDP around the egress guard.
        """
        flags = ", ".join(_REQUIRED_REMOTE_FLAGS)
        try:
            argv = await self._remote_argv()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            problem = f"its command line cannot be read ({first})"
        else:
            missing = [f for f in _REQUIRED_REMOTE_FLAGS if f not in argv]
            if not missing:
                return
            problem = f"it runs without {', '.join(missing)}"
        with contextlib.suppress(Exception):
            await self.browser.close()
        self.browser = None
        raise ActionError(
            "unavailable",
            f"the remote browser is refused: {problem}; without these flags WebRTC could send UDP around the egress guard",
            hint=f"Start the browser with {flags} and --enable-automation (which lets us check them); "
            "a Playwright server applies our flags when started with `run-server --unsafe`, or "
            "pre-launch them with `launch-server --config` (args).",
        )

    async def _remote_argv(self) -> list[str]:
        """The remote browser's command line: over CDP when it allows (``--enable-automation``), else from
        chrome://version in a throwaway context whose proxy leads nowhere (it loads nothing from the network)."""
        with contextlib.suppress(Exception):
            cdp = await self.browser.new_browser_cdp_session()
            try:
                line = await cdp.send("Browser.getBrowserCommandLine")
                return [str(a) for a in line.get("arguments", [])]
            finally:
                with contextlib.suppress(Exception):
                    await cdp.detach()
        context = await self.browser.new_context(
            proxy={"server": "http://127.0.0.1:9", "bypass": "<-loopback>"}, service_workers="block"
        )
        try:
            page = await context.new_page()
            await page.goto("chrome://version", timeout=15_000)
            text = await page.evaluate("() => (document.querySelector('#command_line') || {}).innerText || ''")
        finally:
            with contextlib.suppress(Exception):
                await context.close()
        if not text:
            raise RuntimeError("chrome://version shows no command line")
        return str(text).split()

    def _executable(self) -> str:
        configured = self.runtime.settings.browser.executable_path
        if configured:
            if not os.path.exists(configured):
                raise ActionError(
                    "unavailable", f"settings.browser.executable_path {configured} does not exist", hint=_UNAVAILABLE_HINT
                )
            return configured
        managed = self._pw.chromium.executable_path  # a Playwright-managed browser, when one is installed
        if managed and os.path.exists(managed):
            return str(managed)
        system = _find_chromium(None)
        if system is None:
            raise ActionError(
                "unavailable", "no Chromium was found (no Playwright-managed browser, no system Chromium)", hint=_UNAVAILABLE_HINT
            )
        return system

    def _on_disconnect(self) -> None:
        for name, s in self.sessions.items():
            kept = f" (cookies of profile {s.profile!r} are restored from its last save)" if s.profile else ""
            self.lost[name] = (
                f"the browser crashed and was relaunched: the open page {s.page.url} and this "
                f"session's unsaved cookies and history were lost{kept}"
            )
        self.browser = None

    async def _ensure_browser(self) -> None:
        if self.browser is not None and self.browser.is_connected():
            return
        for s in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await s.proxy.aclose()
        self.sessions.clear()
        self._pending.clear()
        if self.browser is not None:
            with contextlib.suppress(Exception):
                await self.browser.close()
        self.browser = None
        self._cleanup_downloads_dir()
        await self._launch()

    def _cleanup_downloads_dir(self) -> None:
        if self._downloads_dir is not None:
            shutil.rmtree(self._downloads_dir, ignore_errors=True)
            self._downloads_dir = None

    # -- sessions ------------------------------------------------------------------------------------
    def _profile_path(self, name: str) -> Path:
        return self.runtime.state_dir / "browser-profiles" / name / "storage_state.json"

    async def session(self, name: str) -> _Session:
        async with self._launch_lock:  # one relaunch after a crash, however many calls notice it
            await self._ensure_browser()
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

    async def _new_session(self, name: str) -> _Session:
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
            profile = _profile_name(template, name) if template else None
            state: dict[str, Any] | None = None
            if profile:
                span.set_attribute("browser.profile", profile)
                path = self._profile_path(profile)
                with contextlib.suppress(FileNotFoundError, ValueError):
                    state = json.loads(await asyncio.to_thread(path.read_text))
            context: Any = None
            try:
                # A new context and tab start a renderer: as much work for Chromium as a page load, so they
                # take a load slot too (64 sessions opening at once otherwise swamp it: see benchmarks.md).
                async with self.loads:
                    context = await self.browser.new_context(
                        # loopback through the proxy too
                        proxy={"server": server, "bypass": "<-loopback>", **login},
                        service_workers="block",
                        accept_downloads=True,
                        storage_state=state,
                    )
                    timeout_ms = self.runtime.policy.browser.timeout_s * 1000
                    context.set_default_timeout(timeout_ms)
                    page = await context.new_page()
            except BaseException:
                await proxy.aclose()
                if context is not None:  # cut short (the call's deadline) after the context was made:
                    _in_background(context.close())  # closed without holding the call past its deadline
                raise
        s = _Session(name, self, context, page, proxy, profile, saved_state=json.dumps(state) if state else None)
        context.on("page", lambda p: None if s.opening else s.popups.append(p))
        self._attach(s, page)
        self.sessions[name] = s
        return s

    async def new_tab(self, s: _Session) -> None:
        s.opening = True  # the context's "page" event fires before new_page() returns: not a popup
        try:
            s.page = await s.context.new_page()  # no load slot: a timed-out load replaces its tab holding one
        finally:
            s.opening = False
        self._attach(s, s.page)
        s.md_cache = None

    def _attach(self, s: _Session, page: Any) -> None:
        page.on("download", lambda d: s.downloads.append(asyncio.ensure_future(self._download(s, d))))
        page.on("framenavigated", lambda f: _count_commit(s, f))

    async def adopt_popups(self, s: _Session, adopt: bool) -> None:
        """New tabs: the one a click opened becomes the session's page; others are closed."""
        popups, s.popups = s.popups, []
        for i, page in enumerate(popups):
            if adopt and i == len(popups) - 1 and not page.is_closed():
                with contextlib.suppress(Exception):
                    await page.wait_for_load_state(
                        "load", timeout=max(1.0, _remaining(self.runtime.policy.browser.timeout_s) * 1000)
                    )
                denial = _denial_for(s, page.url)
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

    async def _download(self, s: _Session, download: Any) -> None:
        """Downloads land in the workspace only, size-limited, never overwriting a file."""
        limit = self.runtime.policy.browser.max_download_bytes
        self._pending[download] = s
        if self._downloads_dir is not None and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.ensure_future(self._watch_downloads(limit))
        tmp: Path | None = None
        try:
            failure = await download.failure()
            if download in s.refused:
                s.events.append(
                    f"download {download.suggested_filename!r} refused: larger than "
                    f"policy.browser.max_download_bytes ({limit} bytes); it was cancelled"
                )
                return
            if failure:
                s.events.append(f"download {download.suggested_filename!r} failed: {failure}")
                return
            if self.remote:  # the file is on the browser's machine: stream it here first
                fd, name = tempfile.mkstemp(prefix="agent-legs-download-")
                os.close(fd)
                tmp = Path(name)
                await download.save_as(tmp)
                path = tmp
            else:
                path = Path(await download.path())
            size = (await asyncio.to_thread(os.stat, path)).st_size
            if size > limit:
                s.events.append(
                    f"download {download.suggested_filename!r} refused: {size} bytes is over "
                    f"policy.browser.max_download_bytes ({limit})"
                )
                return
            safe = "".join(c if c.isalnum() or c in "-_. " else "_" for c in download.suggested_filename)[:120]
            data = await asyncio.to_thread(path.read_bytes)
            artifact = await asyncio.to_thread(
                self.runtime.workspace.save_unique, f"downloads/{safe.strip(' .') or 'download'}", data
            )
            s.saved.append(artifact)
            s.events.append(f"downloaded {download.url} to {artifact.path} ({artifact.size} bytes)")
        except Exception as exc:
            s.events.append(f"download failed: {exc}")
        finally:
            self._pending.pop(download, None)
            s.refused.discard(download)
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(Exception):
                await download.delete()

    async def _watch_downloads(self, limit: int) -> None:
        """Cancel a download as soon as its partial file passes the size limit (not after it filled the disk)."""
        directory = self._downloads_dir
        while self._pending and directory is not None:
            await asyncio.sleep(0.1)
            sizes = await asyncio.to_thread(_file_sizes, directory)
            if any(size > limit for size in sizes):
                # Chromium names partial files by its own ids, which Playwright does not expose: cancel what is
                # in progress (all but the rarest cases: one download at a time).
                for download, s in list(self._pending.items()):
                    s.refused.add(download)
                    with contextlib.suppress(Exception):
                        await download.cancel()
                await asyncio.to_thread(_remove_large, directory, limit)

    async def save_profile(self, s: _Session) -> None:
        """Write the session's cookies and storage when they changed (atomically: a crash keeps the old file)."""
        if not s.profile:
            return
        state = json.dumps(await s.context.storage_state())
        if state == s.saved_state:
            return
        path = self._profile_path(s.profile)
        await asyncio.to_thread(_atomic_write, path, state)
        s.saved_state = state

    async def close_session(self, session: str) -> None:
        s = self.sessions.pop(session, None)
        if s is None:
            return
        with contextlib.suppress(Exception):
            await self.save_profile(s)
        with contextlib.suppress(Exception):
            await s.context.close()
        await s.proxy.aclose()

    async def aclose(self) -> None:
        for name in list(getattr(self, "sessions", {})):
            await self.close_session(name)
        if getattr(self, "_watcher", None) is not None:
            self._watcher.cancel()  # type: ignore[union-attr]
        with contextlib.suppress(Exception):
            if self.browser is not None:
                await self.browser.close()
        with contextlib.suppress(Exception):
            await self._pw.stop()
        self._cleanup_downloads_dir()


def _count_commit(s: _Session, frame: Any) -> None:
    if frame.parent_frame is None:
        s.commits += 1


def _file_sizes(directory: Path) -> list[int]:
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        return [e.stat().st_size for e in it if e.is_file(follow_symlinks=False)]
    return []


def _remove_large(directory: Path, limit: int) -> None:
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            if e.is_file(follow_symlinks=False) and e.stat().st_size > limit:
                Path(e.path).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # cookies: owner only
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _denial_for(s: _Session, url: str) -> Denial | None:
    """The proxy's denial behind a page now showing ``url`` (the 403 page, or Chromium's tunnel error page)."""
    denied = [*s.recent_denials, *s.proxy.denied]
    for d in reversed(denied):
        if d.url == url:
            return d
    if url.startswith("chrome-error:"):  # Chromium's page for a refused CONNECT: a tunnel denial
        for d in reversed(denied):
            if d.url.startswith("https://") and d.url.count("/") == 2:
                return d
    return None


# -- the calls' common frame ---------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _session(ctx: ActionContext) -> Any:
    """The session's browser state, serialized per session (one tab: one action at a time)."""
    total = ctx.policy.browser.timeout_s
    svc = await ctx.service(BrowserService)
    # The browser's (re)launch, once per process or crash, is not cut short by a call's deadline (it is bounded
    # by the runtime's, timeout_s + 10 s): a launch cancelled part-way would leave no browser for the next call.
    async with svc._launch_lock:
        await svc._ensure_browser()
    token = _DEADLINE.set(asyncio.get_running_loop().time() + total)
    try:
        try:
            async with asyncio.timeout(_remaining(total)):
                s = await svc.session(ctx.session)  # a relaunch, a new context and tab (which wait for a load slot)
        except TimeoutError:
            busy = (
                f" (every load slot was busy: settings.browser.max_concurrent_loads={svc.max_loads})"
                if svc.loads.locked()
                else ""
            )
            raise ActionError(
                "timeout",
                f"the browser could not open this session's tab within {total:g} s "
                f"(policy.browser.timeout_s, for the whole call){busy}; nothing was loaded",
                retryable=True,
                hint="Retry later, or run fewer browser sessions at once.",
            ) from None
        async with _locked_session(svc, s, ctx) as pair:
            yield pair
    finally:
        _DEADLINE.reset(token)


@contextlib.asynccontextmanager
async def _locked_session(svc: BrowserService, s: _Session, ctx: ActionContext) -> Any:
    total = ctx.policy.browser.timeout_s
    try:
        async with asyncio.timeout(_remaining(total)):
            await s.lock.acquire()  # one call at a time per session: waiting for the previous one counts too
    except TimeoutError:
        raise ActionError(
            "timeout",
            f"this session's tab was busy with another call for {total:g} s "
            "(policy.browser.timeout_s, for the whole call); nothing was done",
            retryable=True,
            hint="Wait for the session's previous call, or use another session.",
        ) from None
    try:
        if s.page.is_closed():  # the tab crashed or was closed: a fresh one in the same context
            await svc.new_tab(s)
        lost = svc.lost.pop(ctx.session, None)
        if lost:
            s.events.append(lost)
        if s.popups:
            await svc.adopt_popups(s, adopt=False)
        await _leave_if_blocked(s)  # the page navigated itself (timer, refresh) to a blocked URL since last time
        yield svc, s
    finally:
        s.lock.release()


def _finish(s: _Session, data: dict[str, Any]) -> dict[str, Any]:
    taken = s.proxy.take_denied()
    s.recent_denials.extend(taken)  # still recognised when the page ends up on one of them later
    blocked = [{"url": d.url, "rule": d.rule} for d in taken]
    if blocked:
        data["blocked_requests"] = blocked
    events, s.events = s.events, []
    if events:
        data["events"] = events
    return data


def _notes(data: dict[str, Any]) -> str:
    out = ""
    blocked = data.get("blocked_requests") or []
    if blocked:
        rules = sorted({b["rule"] for b in blocked})
        out += f"\n\n[{len(blocked)} request(s) blocked by the egress policy ({'; '.join(rules)}); see data.blocked_requests]"
    for event in data.get("events") or []:
        out += f"\n[{event}]"
    return out


def _format_fields(fields: list[dict[str, Any]]) -> str:
    lines = []
    for f in fields:
        kind = f["tag"] + (f"[{f['type']}]" if f["type"] and f["type"] != f["tag"] else "")
        extra = [x for x in ("required" if f.get("required") else "", "disabled" if f.get("disabled") else "") if x]
        if f.get("value"):
            extra.append(f"value {f['value']!r}")
        if f.get("options"):
            extra.append("options: " + ", ".join(f["options"]))
        label = f" — {f['label']}" if f.get("label") else ""
        lines.append(f"- {kind} `{f['selector']}`{label}{' (' + '; '.join(extra) + ')' if extra else ''}")
    return (
        (
            "\n\nForm fields (pass these selectors to browser_fill / browser_click; file inputs take workspace "
            "paths):\n" + "\n".join(lines)
        )
        if lines
        else ""
    )


async def _read(s: _Session, fmt: str, selector: str | None) -> tuple[str, dict[str, Any]]:
    """The page (or one element) in the requested format, plus facts about the page."""
    for attempt in range(5):
        try:
            info = await s.page.evaluate(_READ_JS, [selector, fmt])
            break
        except Exception as exc:
            # The page navigated while we read it (a script, a refresh, leaving a blocked page):
            # read the page it arrives at instead of failing.
            if "Execution context was destroyed" not in str(exc) or attempt == 4:
                raise
            with contextlib.suppress(Exception):
                await s.page.wait_for_load_state("load", timeout=5_000)
    if info is None:
        raise ActionError(
            "not_found",
            f"no element matches the selector {selector!r}",
            hint="Call browser_content without a selector to see the page and its fields.",
        )
    if "error" in info:
        raise ActionError("invalid_input", f"invalid CSS selector {selector!r}: {info['error']}")
    meta = {"url": info["url"], "title": info["title"], "main_content_only": info["main"]}
    if fmt == "html":
        return info["html"], meta
    if fmt == "text":
        return info["text"].strip(), meta
    cached = s.md_cache
    if cached is not None and cached[0] == info["base"] and cached[1] == info["html"]:
        md = cached[2]
    else:
        md = html_to_markdown(info["html"], info["base"])
        s.md_cache = (info["base"], info["html"], md)
    if info["main"]:
        md = (
            "(the page's main content; browser_content with selector='body' shows everything, browser_links lists "
            f"all {info['links']} links)\n\n" + md
        )
    return md + _format_fields(info["fields"]), meta


def _page_chars(ctx: ActionContext) -> int:
    # leave room for the header and the notes inside the runtime's output bound
    return max(1000, min(ctx.settings.browser.max_content_chars, ctx.settings.max_output_chars - 800))


def _paginate(text: str, offset: int, limit: int) -> tuple[str, int | None]:
    chunk = text[offset : offset + limit]
    end = offset + len(chunk)
    if end < len(text):
        return chunk + f"\n\n[{len(text) - end} more characters — call browser_content with offset={end}]", end
    return chunk, None


async def _guarded(ctx: ActionContext, s: _Session, coro: Any, element: str | None = None, effect: str | None = None) -> Any:
    """Run a page operation within what is left of the call's deadline; a hung page is closed so the session
    recovers.

    ``element`` names the selector of an element operation: Playwright giving up waiting for that element
    is the model's mistake (``not_found``), not a hung page, and keeps the tab. ``effect`` says what the
    operation may have done on a server (a click, a submitted form): cut short, it is never called
    retryable, since it may have taken effect.
    """
    seconds = ctx.policy.browser.timeout_s
    try:
        async with asyncio.timeout(_remaining(seconds)):
            return await coro
    except ActionError:
        raise
    except asyncio.CancelledError:
        # the runtime's deadline or the caller gave up: stop the page's work too
        task = asyncio.ensure_future(_close_quietly(s.page))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        raise
    except Exception as exc:
        timed_out = isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"
        if element is not None and timed_out and not isinstance(exc, TimeoutError):
            raise ActionError(
                "not_found",
                f"no visible, enabled element matches {element!r} (waited {_element_timeout_ms(ctx) / 1000:g} s)",
                hint="Check the selector against the form fields and links listed with the page (browser_content).",
            ) from None
        maybe = f" after {effect}, which may have taken effect (a form sent, an order placed) or not" if effect else ""
        if not timed_out:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "Target crashed" in message or "has been closed" in message:
                raise ActionError(
                    "failed",
                    f"the tab crashed or was closed ({message}){maybe}; the next call opens a fresh tab",
                    retryable=not effect,
                    hint=_MAY_HAVE_HAPPENED_HINT if effect else None,
                ) from None
            raise ActionError(
                "failed", f"{type(exc).__name__}: {message}{maybe}", hint=_MAY_HAVE_HAPPENED_HINT if effect else None
            ) from None
        await _fresh_tab(s)
        raise ActionError(
            "timeout",
            f"the page did not respond within {seconds:g} s (policy.browser.timeout_s, for "
            f"the whole call){maybe}; the tab was closed and the session continues with a fresh tab",
            retryable=not effect,
            hint=_MAY_HAVE_HAPPENED_HINT if effect else None,
        ) from None


@contextlib.contextmanager
def _after(effect: str) -> Iterator[None]:
    """Steps after an operation with an effect (reading the page it led to): their failure is not a reason to
    repeat the operation, which was done."""
    try:
        yield
    except ActionError as exc:
        if exc.type not in ("timeout", "failed") or not exc.retryable:
            raise
        raise ActionError(
            exc.type,
            f"{effect} was done, then: {exc.message}",
            hint="Do not repeat it: it took effect. Read the page it led to with browser_content.",
        ) from None


def _element_timeout_ms(ctx: ActionContext) -> float:
    return min(_ELEMENT_TIMEOUT_S, ctx.policy.browser.timeout_s / 2) * 1000


async def _fresh_tab(s: _Session) -> None:
    """Replace a hung tab now (its close may complete later), keeping the context: cookies, storage, login."""
    old = s.page
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await old.close()
    with contextlib.suppress(Exception):
        await s.service.new_tab(s)


async def _close_quietly(page: Any) -> None:
    with contextlib.suppress(Exception):
        await page.close()


async def _leave_blocked_page(s: _Session) -> str:
    with contextlib.suppress(Exception):  # back to where we were, else a blank tab
        if await s.page.go_back(wait_until="load", timeout=5000) is None:
            await s.page.goto("about:blank")
    if _denial_for(s, s.page.url) is not None or s.page.url.startswith("chrome-error:"):
        with contextlib.suppress(Exception):
            await s.page.goto("about:blank")  # e.g. a refresh that leads back to the blocked URL at once
    s.md_cache = None
    return str(s.page.url)


async def _leave_if_blocked(s: _Session) -> None:
    """A page that a script or refresh took to a blocked URL is left; the event is reported."""
    denial = _denial_for(s, s.page.url)
    if denial is not None:
        now = await _leave_blocked_page(s)
        s.events.append(
            f"the page tried to navigate to {denial.url} by itself, blocked by the egress policy "
            f"(rule: {denial.rule}); the tab is back at {now}"
        )


async def _deny_if_blocked(s: _Session, response: Any = None, by_page: bool = True) -> None:
    """A navigation that ended on the proxy's block page (or Chromium's tunnel error) is ``denied``.

    ``by_page=False`` judges only the navigation's own response (its redirects included); where a script
    sends the page afterwards is reported as an event by ``_page_result``.
    """
    rule = response.headers.get(DENIED_HEADER.lower()) if response is not None else None
    denial = _denial_for(s, s.page.url) if by_page or rule is not None else None
    if rule is None and denial is None:
        return
    url = denial.url if denial is not None else s.page.url
    rule = rule or (denial.rule if denial is not None else "egress guard")
    await _leave_blocked_page(s)
    raise ActionError(
        "denied",
        f"navigation to {url} was blocked by the egress policy",
        rule=rule,
        hint="Only hosts in policy.network.allow_hosts can be opened.",
    )


_NAVIGATE_TRIES = 3  # a goto interrupted by the old page's own navigation is tried again, within the deadline


async def _goto(ctx: ActionContext, s: _Session, coro: Any, effect: str | None = None) -> Any:
    """A navigation; a tunnel refused by the proxy (https to a denied host) surfaces as ``denied``.

    It waits for one of the browser's load slots first (``settings.browser.max_concurrent_loads``), within
    the call's deadline. ``effect``: see ``_guarded``.
    """
    seconds = ctx.policy.browser.timeout_s
    try:
        async with asyncio.timeout(_remaining(seconds)):
            await s.service.loads.acquire()
    except BaseException as exc:
        if asyncio.iscoroutine(coro):
            coro.close()  # never started: nothing to stop
        if not isinstance(exc, TimeoutError):
            raise
        raise ActionError(
            "timeout",
            f"the browser was busy with other sessions' page loads for {seconds:g} s "
            f"(settings.browser.max_concurrent_loads={s.service.max_loads}); nothing was loaded",
            retryable=True,
            hint="Retry later, or run fewer browser sessions at once.",
        ) from None
    try:
        return await _guarded(ctx, s, coro, effect=effect)
    except ActionError as exc:
        d = _denial_for(s, "chrome-error:") if exc.type == "failed" and "ERR_TUNNEL" in exc.message else None
        if d is not None:
            await _leave_blocked_page(s)
            raise ActionError(
                "denied",
                f"navigation to {d.url} was blocked by the egress policy",
                rule=d.rule,
                hint="Only hosts in policy.network.allow_hosts can be opened.",
            ) from None
        raise
    finally:
        s.service.loads.release()


async def _await_downloads(ctx: ActionContext, s: _Session, wait_for_start: bool) -> list[Artifact]:
    if wait_for_start and not s.downloads:  # a click may start a download a moment later
        for _ in range(10):
            await asyncio.sleep(0.05)
            if s.downloads:
                break
    if s.downloads:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_remaining(ctx.policy.browser.timeout_s)):
                await asyncio.gather(*s.downloads)
        s.downloads.clear()
    saved, s.saved = s.saved, []
    return saved


_T = TypeVar("_T")


async def _read_landed(
    ctx: ActionContext,
    s: _Session,
    read: Callable[[], Awaitable[_T]],
    url_of: Callable[[_T], str],
    interrupted: str = "context was destroyed",
) -> _T:
    """``read()`` of the page where it landed. A page that a script or refresh takes to a blocked URL
    (before or while we read it) is left, the event noted, and the page it is back at is read instead;
    a read cut short by a navigation (its error names ``interrupted``) is done again on the next page."""
    last = 5
    for attempt in range(last + 1):
        if attempt >= 3:  # it keeps leaving for blocked URLs (a refresh or timer loop): stop it there
            with contextlib.suppress(Exception):  # (a navigation still under way may interrupt it: again)
                await s.page.goto("about:blank")
            s.md_cache = None
            if attempt == 3:
                s.events.append("the page kept navigating to blocked URLs by itself; the tab was cleared (about:blank)")
        await _leave_if_blocked(s)
        try:
            result: _T = await _guarded(ctx, s, read())
        except ActionError as exc:
            if attempt == last or interrupted not in exc.message:
                raise
            with contextlib.suppress(Exception):  # the page is navigating (script, refresh): read the next one
                await s.page.wait_for_load_state("load", timeout=_element_timeout_ms(ctx))
            continue
        if attempt >= 3 or _denial_for(s, url_of(result)) is None:
            return result
    raise AssertionError("unreachable")  # the last attempt returns or raises


async def _read_page(ctx: ActionContext, s: _Session, fmt: str, selector: str | None) -> tuple[str, dict[str, Any]]:
    text, meta = await _read_landed(ctx, s, lambda: _read(s, fmt, selector), lambda r: str(r[1]["url"]))
    return ctx.redactor.text(text), meta  # scrubbed whole before it is paginated: no page ends mid-secret


async def _page_result(
    ctx: ActionContext, s: _Session, status: int | None, artifacts: list[Artifact] | None = None
) -> ActionOutput:
    """The page after a navigation, click or submit: title, URL, status and the first part as markdown."""
    with ctx.tracer.start_as_current_span("browser read page"):
        text, meta = await _read_page(ctx, s, "markdown", None)
    body, next_offset = _paginate(text, 0, _page_chars(ctx))
    data = _finish(s, {**meta, "status": status, "next_offset": next_offset, "length": len(text)})
    status_text = f" (status {status})" if status is not None else ""
    return ActionOutput(
        output=f"# {meta['title'] or '(untitled)'}\nURL: {meta['url']}{status_text}\n\n{body}" + _notes(data),
        data=data,
        artifacts=artifacts or [],
    )


# -- actions -------------------------------------------------------------------------------------------
def _timeout(policy: Any, args: Any) -> float:
    return float(policy.browser.timeout_s) + _TIMEOUT_SLACK_S


@action(
    "browser.navigate",
    description="""Open a URL in this session's browser tab and return the page
    title, final URL, HTTP status and the page as markdown (links absolute; form fields listed with selectors
    for browser_fill / browser_click). Long pages: continue with browser_content(offset=...).""",
    timeout=_timeout,
)
async def browser_navigate(ctx: ActionContext, args: NavigateInput) -> ActionOutput:
    url = args.url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    blank = url.lower() == "about:blank"  # an empty tab: loads nothing
    if scheme not in ("http", "https") and not blank:  # file:, data:, javascript:, blob:, view-source:, chrome:...
        raise ActionError("denied", f"the browser only opens http(s) URLs, not {scheme or 'relative'!r} ones", rule=_SCHEME_RULE)
    if not blank:
        ctx.egress.check_target(url)  # scheme and host rules: a clear denial before Chromium does anything
    async with _session(ctx) as (svc, s):
        with ctx.tracer.start_as_current_span("browser page load") as span:
            span.set_attribute("url.full", ctx.redactor.text(url.split("?", 1)[0]))
            for attempt in range(_NAVIGATE_TRIES):
                try:
                    response = await _goto(ctx, s, s.page.goto(url, wait_until="load"))
                except ActionError as exc:
                    if "Download is starting" in exc.message:
                        response = None  # the URL is a file: it downloads into the workspace
                        break
                    if attempt + 1 < _NAVIGATE_TRIES and "interrupted by another navigation" in exc.message:
                        # The old page's own script navigated at the same moment (a timer or refresh,
                        # often to a URL the proxy refuses): the model asked for this URL, so ask again.
                        continue
                    raise
                break
            s.md_cache = None
            await _deny_if_blocked(s, response, by_page=False)
            if response is not None:
                span.set_attribute("http.response.status_code", response.status)
        artifacts = await _await_downloads(ctx, s, wait_for_start=response is None)
        out = await _page_result(ctx, s, response.status if response else None, artifacts)
        await svc.save_profile(s)
        return out


@action(
    "browser.content",
    description="""Read the current page as markdown (default), visible text or
    html, optionally only the element matching a CSS selector. Long pages are paginated: pass the offset the
    previous result names.""",
    read_only=True,
    timeout=_timeout,
)
async def browser_content(ctx: ActionContext, args: ContentInput) -> ActionOutput:
    async with _session(ctx) as (_, s):
        text, meta = await _read_page(ctx, s, args.format, args.selector)
        body, next_offset = _paginate(text, args.offset, _page_chars(ctx))
        data = _finish(s, {**meta, "format": args.format, "offset": args.offset, "next_offset": next_offset, "length": len(text)})
        if not body:
            body = "(empty page: call browser_navigate first)" if meta["url"] == "about:blank" else "(empty)"
        return ActionOutput(output=body + _notes(data), data=data)


@action(
    "browser.click",
    description="""Click an element, by CSS selector or by its visible text; waits for
    the page to settle and returns the resulting page. A click that opens a new tab switches to it; a click
    that starts a download saves the file in the workspace.""",
    timeout=_timeout,
)
async def browser_click(ctx: ActionContext, args: ClickInput) -> ActionOutput:
    if not args.selector and not args.text:
        raise ActionError("invalid_input", "give a selector or a text to click")
    async with _session(ctx) as (svc, s):
        page = s.page
        locator = page.locator(args.selector).first if args.selector else page.get_by_text(args.text).first

        element = args.selector or f"text={args.text}"
        # One round trip on the common path: is the element there and visible, and is it a link or a form
        # button (which navigates, or downloads, a moment after the click)? Only a hidden one is waited for.
        probe = await _guarded(ctx, s, locator.evaluate(_CLICK_PROBE_JS, timeout=_element_timeout_ms(ctx)), element=element)
        if not probe["visible"]:
            await _guarded(ctx, s, locator.wait_for(state="visible", timeout=_element_timeout_ms(ctx)), element=element)
        navigates = bool(probe["navigates"])

        async def click() -> None:
            commits, downloads = s.commits, len(s.downloads)
            requests: list[Any] = []
            ended: list[float] = []
            loop = asyncio.get_running_loop()

            def on_request(request: Any) -> None:
                if request.is_navigation_request() and request.frame == page.main_frame:
                    requests.append(request)

            def on_end(request: Any) -> None:
                if request in requests:
                    ended.append(loop.time())

            # Listen only around the click: per-request events cost a round trip each on every page.
            page.on("request", on_request)
            page.on("requestfailed", on_end)
            page.on("requestfinished", on_end)
            try:
                await locator.click(timeout=_element_timeout_ms(ctx))
                # Wait until the navigation the click started commits (Playwright's click does not), turns
                # into a download or a new tab, or clearly is not coming: no navigation request within the
                # first moment, or its request ended 0.5 s ago without a page.
                first = loop.time() + (0.5 if navigates else 0.1)
                while s.commits == commits and len(s.downloads) == downloads and not s.popups:
                    now = loop.time()
                    if (not requests and now > first) or (ended and now > ended[-1] + 0.5):
                        break
                    await asyncio.sleep(0.005)
            finally:
                page.remove_listener("request", on_request)
                page.remove_listener("requestfailed", on_end)
                page.remove_listener("requestfinished", on_end)
            with contextlib.suppress(Exception):
                await page.wait_for_load_state("load", timeout=5000)

        # Any click may have an effect (a form button, a link, a script's handler): cut short, never retryable.
        effect = f"the click on {element!r}"
        await _goto(ctx, s, click(), effect=effect)
        with _after(effect):
            s.md_cache = None
            artifacts = await _await_downloads(ctx, s, wait_for_start=False)
            if s.popups:
                await svc.adopt_popups(s, adopt=True)
            await _deny_if_blocked(s)
            out = await _page_result(ctx, s, None, artifacts)
            await svc.save_profile(s)
            return out


@action(
    "browser.fill",
    description="""Type a value into a form field (CSS selector from the page's field
    list); for a file input, the value is a workspace path to upload. With submit=true, press Enter to submit
    the form and return the result page.""",
    timeout=_timeout,
)
async def browser_fill(ctx: ActionContext, args: FillInput) -> ActionOutput:
    async with _session(ctx) as (svc, s):
        page = s.page
        locator = page.locator(args.selector).first
        is_file = await _guarded(
            ctx,
            s,
            locator.evaluate(
                "e => e.tagName === 'INPUT' && (e.type || '').toLowerCase() === 'file'", timeout=_element_timeout_ms(ctx)
            ),
            element=args.selector,
        )
        uploaded: list[str] = []
        if is_file:
            files = []
            paths = [p.strip() for p in args.value.splitlines() if p.strip()]
            if not paths:
                raise ActionError(
                    "invalid_input",
                    f"{args.selector} is a file input: give a workspace file path to upload (several: one per line)",
                )
            limit, total = ctx.policy.browser.max_upload_bytes, 0
            for rel in paths:
                # Uploads come from the workspace only: read through its checks (no '..', nothing outside, no
                # symlinks, never the state directory) and hand the browser the bytes, never a path. Every
                # file is read before any is attached: one refused path uploads nothing.
                try:
                    content = await asyncio.to_thread(ctx.workspace.read_bytes, rel, max_bytes=limit - total)
                except ActionError as exc:
                    over = " (policy.browser.max_upload_bytes, all files together)" if "over the limit" in exc.message else ""
                    raise ActionError(
                        exc.type,
                        f"cannot upload {rel!r}: {exc.message}{over}; nothing was attached",
                        rule=exc.rule,
                        hint=exc.hint or "Uploads take files inside the workspace (paths relative to it); see files_list.",
                    ) from None
                total += len(content)
                name = rel.rsplit("/", 1)[-1]
                files.append(
                    {"name": name, "mimeType": mimetypes.guess_type(name)[0] or "application/octet-stream", "buffer": content}
                )
                uploaded.append(ctx.workspace.check(rel))
            await _guarded(ctx, s, locator.set_input_files(files, timeout=_element_timeout_ms(ctx)), element=args.selector)
        else:
            await _guarded(ctx, s, locator.fill(args.value, timeout=_element_timeout_ms(ctx)), element=args.selector)
        if not args.submit:
            what = f"Attached {', '.join(uploaded)} to" if is_file else "Filled"
            data = _finish(s, {"url": page.url, **({"uploaded": uploaded} if uploaded else {})})
            return ActionOutput(output=f"{what} {args.selector}." + _notes(data), data=data)

        async def submit() -> None:
            async with page.expect_navigation(wait_until="load"):
                if is_file:  # Enter does nothing on a file input: submit its form
                    await locator.evaluate("e => e.form && e.form.requestSubmit()")
                else:
                    await locator.press("Enter")

        effect = f"submitting the form of {args.selector!r}"
        await _goto(ctx, s, submit(), effect=effect)
        with _after(effect):
            s.md_cache = None
            await _deny_if_blocked(s)
            out = await _page_result(ctx, s, None, await _await_downloads(ctx, s, wait_for_start=False))
            if uploaded:
                out.data = {**(out.data or {}), "uploaded": uploaded}
            await svc.save_profile(s)
            return out


@action(
    "browser.screenshot",
    description="Save a PNG screenshot of the current page in the workspace (screenshots/...) and return its path.",
    timeout=_timeout,
)
async def browser_screenshot(ctx: ActionContext, args: ScreenshotInput) -> ActionOutput:
    async with _session(ctx) as (_, s):
        # (a screenshot cut short by a navigation fails with a protocol error)
        png = await _read_landed(
            ctx,
            s,
            lambda: s.page.screenshot(full_page=args.full_page, type="png"),
            lambda _: str(s.page.url),
            interrupted="Protocol error",
        )
        artifact = await asyncio.to_thread(ctx.workspace.save_unique, "screenshots/page.png", png)
        data = _finish(s, {"url": s.page.url, "path": artifact.path})
        return ActionOutput(
            output=f"Saved screenshot {artifact.path} ({artifact.size} bytes) of {s.page.url}" + _notes(data),
            data=data,
            artifacts=[artifact],
        )


@action(
    "browser.links", description="List the links on the current page: text and absolute URL.", read_only=True, timeout=_timeout
)
async def browser_links(ctx: ActionContext, args: NoInput) -> ActionOutput:
    async with _session(ctx) as (_, s):
        links = await _read_landed(ctx, s, lambda: s.page.evaluate(_LINKS_JS), lambda _: str(s.page.url))
        lines = [f"- [{text or '(no text)'}]({href})" for text, href in links]
        data = _finish(s, {"url": s.page.url, "links": [{"text": t, "url": h} for t, h in links]})
        return ActionOutput(output=("\n".join(lines) or "(no links)") + _notes(data), data=data)


@action("browser.back", description="Go back to the previous page in this session's tab and return it.", timeout=_timeout)
async def browser_back(ctx: ActionContext, args: NoInput) -> ActionOutput:
    async with _session(ctx) as (svc, s):
        response = await _goto(ctx, s, s.page.go_back(wait_until="load"))
        s.md_cache = None
        if response is None and s.page.url in ("about:blank", ""):
            raise ActionError("invalid_input", "there is no previous page in this session")
        await _deny_if_blocked(s, response)
        out = await _page_result(ctx, s, response.status if response else None)
        await svc.save_profile(s)
        return out
