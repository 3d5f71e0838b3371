"""browser.*: Playwright-driven Chromium with one context per session and every request policed.

Each session's BrowserContext talks to the network only through its own ``EgressProxy`` (the egress
guard in front of every navigation, redirect, sub-resource, iframe, popup and WebSocket; Chromium
resolves nothing itself). Top-level non-web schemes are refused before ``goto``; service workers
are blocked; WebRTC may not leave outside the proxy. Pages are read as markdown for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._context import ActionContext
from .._egress_proxy import DENIED_HEADER, EgressProxy
from .._errors import ActionError
from .._models import ActionOutput
from .._registry import action
from .._service import Service

log = logging.getLogger("agent_legs.browser")

CHROMIUM_ARGS = [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp", "--force-webrtc-ip-handling-policy",
    "--disable-quic", "--disable-dev-shm-usage", "--disable-features=AutofillServerCommunication,MediaRouter",
    "--disable-domain-reliability", "--no-pings",
]
_UNAVAILABLE_HINT = ("Install Chromium (apt-get install -y chromium), set settings.browser.executable_path, or point "
                     "settings.browser.ws_endpoint at a Playwright server.")
_FIELDS_JS = """() => Array.from(document.querySelectorAll('input, textarea, select, button')).slice(0, 50).map(e => {
  const sel = e.id ? '#' + CSS.escape(e.id) : (e.name ? `${e.tagName.toLowerCase()}[name="${e.name}"]` : null);
  const label = e.labels && e.labels[0] ? e.labels[0].innerText : (e.placeholder || e.value || e.innerText || '');
  return {tag: e.tagName.toLowerCase(), type: e.type || '', name: e.name || '', selector: sel,
          label: label.trim().slice(0, 60)};
})"""
_LINKS_JS = ("() => Array.from(document.querySelectorAll('a[href]')).slice(0, 500)"
             ".map(a => [a.innerText.trim().slice(0, 120), a.href])")


class NavigateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Absolute http(s) URL to open in this session's tab.")


class ContentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str | None = Field(None, description="CSS selector to read only part of the page.")
    format: Literal["markdown", "text", "html"] = Field("markdown", description="Output format.")
    offset: int = Field(0, ge=0, description="Character offset, to continue a long page.")


class ClickInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str | None = Field(None, description="CSS selector of the element to click.")
    text: str | None = Field(None, description="Visible text of the element to click (if no selector).")


class FillInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    selector: str = Field(description="CSS selector of the input (see the form fields listed with the page).")
    value: str = Field(description="Text to type into the field.")
    submit: bool = Field(False, description="Submit the form afterwards (press Enter).")


class ScreenshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full_page: bool = Field(False, description="Capture the whole scrollable page.")


class NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(eq=False)
class _Session:
    context: Any
    page: Any
    proxy: EgressProxy
    profile: str | None
    events: list[str] = field(default_factory=list)
    downloads: list[asyncio.Future[None]] = field(default_factory=list)
    saved: list[Any] = field(default_factory=list)


def _find_chromium(configured: str | None) -> str | None:
    if configured:
        return configured
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


class BrowserService(Service):
    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        self.sessions: dict[str, _Session] = {}
        self.browser: Any = None
        self.lost: str | None = None
        await self._launch()

    async def _launch(self) -> None:
        settings = self.runtime.settings.browser
        chromium = self._pw.chromium
        try:
            if settings.ws_endpoint:
                self.browser = await chromium.connect(settings.ws_endpoint)
            elif settings.cdp_url:
                self.browser = await chromium.connect_over_cdp(settings.cdp_url)
            else:
                executable = _find_chromium(settings.executable_path)
                args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
                try:  # a Playwright-managed browser first, else the system Chromium
                    if settings.executable_path:
                        raise FileNotFoundError
                    self.browser = await chromium.launch(headless=settings.headless, args=args)
                except Exception:
                    if executable is None:
                        raise ActionError("unavailable", "no Chromium was found", hint=_UNAVAILABLE_HINT) from None
                    self.browser = await chromium.launch(executable_path=executable, headless=settings.headless,
                                                         args=args)
        except ActionError:
            raise
        except Exception as exc:
            raise ActionError("unavailable", f"cannot start or reach a browser: {exc}", retryable=True,
                              hint=_UNAVAILABLE_HINT) from None
        self.browser.on("disconnected", lambda _: self._on_disconnect())

    def _on_disconnect(self) -> None:
        if self.sessions:
            self.lost = f"the browser crashed; lost the open pages of {len(self.sessions)} session(s)"
        self.browser = None

    def _profile_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "default"
        return self.runtime.state_dir / "browser-profiles" / f"{safe}.json"

    async def session(self, ctx: ActionContext) -> _Session:
        if self.browser is None or not self.browser.is_connected():
            for s in list(self.sessions.values()):
                with contextlib.suppress(Exception):
                    await s.proxy.aclose()
            self.sessions.clear()
            await self._launch()
        existing = self.sessions.get(ctx.session)
        if existing is not None:
            if existing.page.is_closed():  # closed after a hang: a new tab in the same context
                existing.page = await existing.context.new_page()
            return existing
        proxy = await EgressProxy(self.runtime.egress).start()
        profile = self.runtime.settings.browser.profile
        storage = self._profile_path(profile) if profile else None
        context = await self.browser.new_context(
            proxy={"server": proxy.url, "bypass": "<-loopback>"},
            service_workers="block",
            accept_downloads=True,
            storage_state=str(storage) if storage and storage.exists() else None,
        )
        timeout_ms = self.runtime.policy.browser.timeout_s * 1000
        context.set_default_timeout(timeout_ms)
        page = await context.new_page()
        s = _Session(context, page, proxy, profile)
        context.on("page", lambda p: asyncio.ensure_future(self._popup(s, p)))
        page.on("download", lambda d: s.downloads.append(asyncio.ensure_future(self._download(s, d))))
        self.sessions[ctx.session] = s
        return s

    async def _popup(self, s: _Session, page: Any) -> None:
        if page is s.page or await page.opener() is None:  # our own new tab, not a page-opened popup
            return
        s.events.append("a popup or new tab was opened and closed (its requests went through the egress guard)")
        with contextlib.suppress(Exception):
            await page.close()

    async def _download(self, s: _Session, download: Any) -> None:
        """Downloads land in the workspace only, size-limited, never overwriting a file."""
        limit = self.runtime.policy.browser.max_download_bytes
        try:
            path = await download.path()
            size = (await asyncio.to_thread(os.stat, path)).st_size
            if size > limit:
                s.events.append(f"download {download.suggested_filename!r} refused: {size} bytes is over "
                                f"policy.browser.max_download_bytes ({limit})")
                return
            name = "".join(c if c.isalnum() or c in "-_. " else "_" for c in download.suggested_filename)[:120]
            data = await asyncio.to_thread(Path(path).read_bytes)
            artifact = self.runtime.workspace.save_unique(f"downloads/{name.strip(' .') or 'download'}", data)
            s.saved.append(artifact)
            s.events.append(f"downloaded {download.url} to {artifact.path} ({artifact.size} bytes)")
        except Exception as exc:
            s.events.append(f"download failed: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await download.delete()

    async def save_profile(self, s: _Session) -> None:
        if s.profile:
            path = self._profile_path(s.profile)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            await s.context.storage_state(path=str(path))

    async def close_session(self, session: str) -> None:
        s = self.sessions.pop(session, None)
        if s is not None:
            with contextlib.suppress(Exception):
                await self.save_profile(s)
            with contextlib.suppress(Exception):
                await s.context.close()
            await s.proxy.aclose()

    async def aclose(self) -> None:
        for name in list(self.sessions):
            await self.close_session(name)
        with contextlib.suppress(Exception):
            if self.browser is not None:
                await self.browser.close()
        with contextlib.suppress(Exception):
            await self._pw.stop()


async def _session(ctx: ActionContext) -> tuple[BrowserService, _Session, list[str]]:
    svc = await ctx.service(BrowserService)
    notes = []
    if svc.lost:
        notes.append(svc.lost)
        svc.lost = None
    s = await svc.session(ctx)
    s.proxy.take_denied()
    return svc, s, notes


def _finish(s: _Session, data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    blocked = [{"url": d.url, "rule": d.rule} for d in s.proxy.take_denied()]
    if blocked:
        data["blocked_requests"] = blocked
    events = notes + s.events
    s.events = []
    if events:
        data["events"] = events
    return data


def _blocked_note(data: dict[str, Any]) -> str:
    blocked = data.get("blocked_requests") or []
    return f"\n[{len(blocked)} request(s) blocked by the egress policy; see data.blocked_requests]" if blocked else ""


async def _page_text(page: Any, fmt: str, selector: str | None) -> str:
    if fmt == "text":
        return str(await (page.locator(selector).first.inner_text() if selector else page.inner_text("body")))
    html = str(await (page.locator(selector).first.inner_html() if selector else page.content()))
    if fmt == "html":
        return html
    from markdownify import markdownify

    md = markdownify(html, heading_style="ATX", strip=["img"]).strip()
    while "\n\n\n" in md:
        md = md.replace("\n\n\n", "\n\n")
    fields = await page.evaluate(_FIELDS_JS)
    if fields:
        md += "\n\nForm fields (use these selectors with browser_fill / browser_click):\n" + "\n".join(
            f"- {f['tag']}{'[' + f['type'] + ']' if f['type'] else ''} {f['selector'] or '(no selector)'}"
            f"{' — ' + f['label'] if f['label'] else ''}" for f in fields)
    return md


def _page_chars(ctx: ActionContext) -> int:
    # leave room for the header and the "more characters" note inside the runtime's output bound
    return max(1000, min(ctx.settings.browser.max_content_chars, ctx.settings.max_output_chars - 500))


def _paginate(text: str, offset: int, limit: int) -> tuple[str, int | None]:
    chunk = text[offset: offset + limit]
    end = offset + len(chunk)
    if end < len(text):
        return chunk + f"\n\n[{len(text) - end} more characters — call browser_content with offset={end}]", end
    return chunk, None


async def _guarded(ctx: ActionContext, s: _Session, coro: Any) -> Any:
    """Run a page operation; a hung page is closed so the session recovers with a fresh tab."""
    try:
        async with asyncio.timeout(ctx.policy.browser.timeout_s):
            return await coro
    except ActionError:
        raise
    except Exception as exc:
        timed_out = isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"
        if not timed_out:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ActionError("failed", f"{type(exc).__name__}: {first}") from None
        with contextlib.suppress(Exception):
            await s.page.close()
        raise ActionError("timeout", f"the page did not respond within {ctx.policy.browser.timeout_s:g} s; the tab "
                          "was closed (the session continues with a fresh tab)", retryable=True) from None


async def _check_denied_response(s: _Session, response: Any) -> None:
    if response is not None:
        rule = response.headers.get(DENIED_HEADER.lower())
        if rule:
            url = response.url
            with contextlib.suppress(Exception):  # leave the proxy's error page: back to where we were
                if await s.page.go_back(wait_until="load", timeout=5000) is None:
                    await s.page.goto("about:blank")
            raise ActionError("denied", f"navigation to {url} was blocked by the egress policy", rule=rule)


async def _summary(ctx: ActionContext, s: _Session, response: Any) -> ActionOutput:
    page = s.page
    text = await _page_text(page, "markdown", None)
    body, next_offset = _paginate(text, 0, _page_chars(ctx))
    data = _finish(s, {"url": page.url, "title": await page.title(), "status": response.status if response else None,
                       "next_offset": next_offset, "length": len(text)}, [])
    return ActionOutput(output=f"# {data['title']}\nURL: {page.url} (status {data['status']})\n\n{body}"
                        + _blocked_note(data), data=data)


@action("browser.navigate", description="""Open a URL in this session's browser tab and return the
    page title, final URL, status and the page as markdown (with form fields and their selectors).""",
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_navigate(ctx: ActionContext, args: NavigateInput) -> ActionOutput:
    scheme = args.url.split(":", 1)[0].lower() if ":" in args.url else ""
    if scheme not in ("http", "https"):
        raise ActionError("denied", f"the browser only opens http(s) URLs, not {scheme or 'relative'!r} ones",
                          rule="browser schemes (http, https)")
    await ctx.egress.check_url(args.url)  # a clear denial before Chromium does anything
    svc, s, notes = await _session(ctx)
    with ctx.tracer.start_as_current_span("browser page load") as span:
        span.set_attribute("url.full", ctx.redactor.text(args.url.split("?", 1)[0]))
        response = await _guarded(ctx, s, s.page.goto(args.url, wait_until="load"))
        await _check_denied_response(s, response)
    out = await _summary(ctx, s, response)
    out.data = {**(out.data or {}), **({"events": notes} if notes else {})}
    await svc.save_profile(s)
    return out


@action("browser.content", description="""Read the current page (markdown, text or html), optionally
    only the part matching a CSS selector; long pages are paginated with offset.""", read_only=True,
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_content(ctx: ActionContext, args: ContentInput) -> ActionOutput:
    _, s, notes = await _session(ctx)
    text = await _guarded(ctx, s, _page_text(s.page, args.format, args.selector))
    body, next_offset = _paginate(text, args.offset, _page_chars(ctx))
    data = _finish(s, {"url": s.page.url, "format": args.format, "offset": args.offset, "next_offset": next_offset,
                       "length": len(text)}, notes)
    return ActionOutput(output=body or "(empty)", data=data)


@action("browser.click", description="""Click an element by CSS selector or by its visible text, then
    wait for the page to settle and return the resulting page.""",
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_click(ctx: ActionContext, args: ClickInput) -> ActionOutput:
    if not args.selector and not args.text:
        raise ActionError("invalid_input", "give a selector or a text to click")
    svc, s, notes = await _session(ctx)
    locator = s.page.locator(args.selector).first if args.selector else s.page.get_by_text(args.text).first

    async def click() -> Any:
        before = s.page.url
        await locator.click()
        with contextlib.suppress(Exception):
            await s.page.wait_for_load_state("load", timeout=5000)
        if s.page.url == before and not s.downloads:  # no navigation: maybe a download is starting
            for _ in range(10):
                await asyncio.sleep(0.05)
                if s.downloads:
                    break

    await _guarded(ctx, s, click())
    if s.downloads:  # a click that started a download: wait for it to land in the workspace
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ctx.policy.browser.timeout_s):
                await asyncio.gather(*s.downloads)
        s.downloads.clear()
    out = await _summary(ctx, s, None)
    out.artifacts, s.saved = list(s.saved), []
    out.data = {**(out.data or {}), **({"events": notes} if notes else {})}
    await svc.save_profile(s)
    return out


@action("browser.fill", description="""Type a value into a form field (CSS selector); with submit=true,
    press Enter to submit the form and return the resulting page.""",
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_fill(ctx: ActionContext, args: FillInput) -> ActionOutput:
    svc, s, notes = await _session(ctx)

    async def fill() -> None:
        await s.page.fill(args.selector, args.value)
        if args.submit:
            async with s.page.expect_navigation(wait_until="load"):
                await s.page.press(args.selector, "Enter")

    await _guarded(ctx, s, fill())
    if not args.submit:
        return ActionOutput(output=f"Filled {args.selector}.", data=_finish(s, {"url": s.page.url}, notes))
    out = await _summary(ctx, s, None)
    await svc.save_profile(s)
    return out


@action("browser.screenshot", description="Save a PNG screenshot of the current page in the workspace.",
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_screenshot(ctx: ActionContext, args: ScreenshotInput) -> ActionOutput:
    _, s, notes = await _session(ctx)
    png = await _guarded(ctx, s, s.page.screenshot(full_page=args.full_page, type="png"))
    artifact = ctx.workspace.save_unique("screenshots/page.png", png)
    return ActionOutput(output=f"Saved screenshot {artifact.path} ({artifact.size} bytes) of {s.page.url}",
                        data=_finish(s, {"url": s.page.url, "path": artifact.path}, notes), artifacts=[artifact])


@action("browser.links", description="List the links on the current page: text and absolute URL.", read_only=True,
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_links(ctx: ActionContext, args: NoInput) -> ActionOutput:
    _, s, notes = await _session(ctx)
    links = await _guarded(ctx, s, s.page.evaluate(_LINKS_JS))
    lines = [f"- [{text or '(no text)'}]({href})" for text, href in links]
    return ActionOutput(output="\n".join(lines) or "(no links)",
                        data=_finish(s, {"url": s.page.url, "links": [{"text": t, "url": h} for t, h in links]}, notes))


@action("browser.back", description="Go back to the previous page in this session's tab.",
        timeout=lambda policy, args: policy.browser.timeout_s + 10)
async def browser_back(ctx: ActionContext, args: NoInput) -> ActionOutput:
    _, s, _notes = await _session(ctx)
    response = await _guarded(ctx, s, s.page.go_back(wait_until="load"))
    if response is None and s.page.url in ("about:blank", ""):
        raise ActionError("invalid_input", "there is no previous page")
    return await _summary(ctx, s, response)
