"""browser.*: the browser actions, Playwright-driven Chromium with one context per session and every
request policed (their input models are in ``_models``).

The family's modules, each one idea: ``_launcher`` (finding, launching or connecting Chromium, its
flags, the remote browser's check), ``_service`` (``BrowserService``: contexts, per-session egress
proxies, profiles, popups), ``_slots`` (the load slots: a first-come first-served queue), ``_pool``
(a pool of Playwright servers, ``ws_endpoints``), ``_session`` (one session's state), ``_deadline`` (the call's
deadline), ``_call`` (the frame of a call: lock, guarded page operations, navigations), ``_blocked``
(pages the egress guard blocked), ``_page`` (reading a page for the model), ``_quiet`` (following a
click's navigation without protocol messages of our own), ``_warm`` (the next click's selector engine,
installed after a navigating click's read), ``_files`` (downloads and uploads through the workspace).

Invariants of the handlers: top-level non-web schemes (file:, data:, javascript:, blob:, chrome:...) are
refused before ``goto`` (the proxy never sees them), and an http(s) URL the egress policy refuses is
``denied`` before Chromium does anything; everything else a page loads goes through the session's proxy.
A click or a submitted form may have had an effect: cut short, it is never ``retryable``. Uploads are read
from the workspace (its checks) and handed over as bytes.

Threat model: the model is compromised (any URL, selector, path) and pages are hostile (scripts,
redirects, popups, downloads, self-navigation to blocked hosts): see each module for its part.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._models import ActionOutput
from ..._registry import action
from ..._retry import retrying
from ..._telemetry._semconv import HTTP_RESPONSE_STATUS_CODE, URL_FULL
from ._blocked import deny_if_blocked
from ._call import after, element_timeout_ms, goto, guarded, open_session
from ._deadline import monotonic_deadline
from ._files import await_downloads, read_uploads
from ._models import ClickInput, ContentInput, FillInput, NavigateInput, NoInput, ScreenshotInput
from ._page import finish, notes, page_chars, page_result, paginate, read_landed, read_links, read_page
from ._quiet import listen, main_frame, wait_loaded
from ._warm import warm_selectors

__all__ = [
    "browser_back",
    "browser_click",
    "browser_content",
    "browser_fill",
    "browser_links",
    "browser_navigate",
    "browser_screenshot",
]

_SCHEME_RULE = "browser schemes (only http and https pages, and about:blank, are opened)"
_TIMEOUT_SLACK_S = 10.0  # the runtime's deadline is later than the page timeout: we report it, not the runtime
_NAVIGATE_TRIES = 3  # a goto interrupted by the old page's own navigation is tried again, within the deadline
# Whether a clicked element is a link or a form button (which may start a navigation a moment after the
# click): asked after a click only when no navigation request showed within the first moment.
_NAVIGATES_JS = (
    "e => !!(e.closest('a[href], area[href]') || (e.form && e.closest('button, input[type=submit], input[type=image]')))"
)
_NAVIGATION_START_S = 0.1  # a click's navigation request shows within this (a script's, a link's: see below)
_LINK_NAVIGATION_START_S = 0.5  # a link or form button: its navigation may start a moment later
_NAVIGATES_PROBE_MS = 250  # the element may be gone (a script removed it, the page is leaving): do not wait long


async def _click(locator: Any, element: str, timeout_ms: float) -> None:
    """Playwright's click (which waits for the element to be actionable); an element that never was is
    ``not_found`` (nothing was clicked), a click cut short after it was dispatched is left to ``guarded``."""
    try:
        await locator.click(timeout=timeout_ms)
    except Exception as exc:
        message = str(exc)
        if type(exc).__name__ != "TimeoutError" or "performing click action" in message or "click action done" in message:
            raise
        waited = "it stayed hidden, disabled, moving or covered" if "element is" in message else "none appeared"
        raise ActionError(
            "not_found",
            f"no visible, enabled element matches {element!r} (waited {timeout_ms / 1000:g} s: {waited}); nothing was clicked",
            hint="Check the selector against the form fields and links listed with the page (browser_content).",
        ) from None


async def _navigates(locator: Any) -> bool:
    """Whether the clicked element is a link or a form button; ``True`` when the page is already leaving."""
    try:
        return bool(await locator.evaluate(_NAVIGATES_JS, timeout=_NAVIGATES_PROBE_MS))
    except Exception as exc:
        return "context was destroyed" in str(exc) or "navigat" in str(exc)


_SETTLE_MS = 1000  # after an interrupted goto: how long its own navigation, still in flight, may take to commit
_ABORT_SETTLE_MS = 300  # after an aborted goto: how long the page's own navigation may take to commit


def _navigation_interrupted(exc: BaseException) -> bool:
    # The old page's own script navigated at the same moment (a timer or refresh, often to a URL the
    # proxy refuses): the model asked for this URL, so ask again.
    return isinstance(exc, ActionError) and "interrupted by another navigation" in exc.message


async def _settle(page: Any, timeout_ms: float = _SETTLE_MS) -> None:
    """Let the navigation an interrupted ``goto`` started commit before the next attempt.

    Playwright ends a ``goto`` at the first navigation that commits: when a page's script navigates at the
    same moment, that is the script's, and ours, not cancelled by Chromium, commits a moment later. Asked
    again at once, the next ``goto`` takes that late commit for a competitor and fails in turn, and so on:
    every later navigation of the tab failed with "interrupted by another navigation" to its own URL. So
    wait (at most ``_SETTLE_MS``) for the main frame's next commit and its load.
    """
    with contextlib.suppress(Exception):  # nothing commits (ours was cancelled after all): the wait runs out
        await page.wait_for_event("framenavigated", predicate=lambda f: f.parent_frame is None, timeout=timeout_ms)
        await page.wait_for_load_state("load", timeout=timeout_ms)


async def _aborted_by_the_page(page: Any, exc: ActionError, before: str) -> bool:
    """Whether a ``goto`` that failed ``net::ERR_ABORTED`` lost to the page's own navigation of the same moment
    (Chromium dropped ours for the script's): then the tab is elsewhere once that one commits, and the model's
    URL is asked again. A response without a page (204) aborts too, but leaves the tab where it was."""
    if "ERR_ABORTED" not in exc.message or page.is_closed():
        return False
    await _settle(page, _ABORT_SETTLE_MS)
    return str(page.url) != before


def _timeout(policy: Any, args: Any) -> float:
    # the work's timeout starts when a load slot is granted: the queue's allowance comes on top (``_slots``)
    return float(policy.browser.timeout_s) + float(policy.browser.queue_timeout_s) + _TIMEOUT_SLACK_S


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
    async with open_session(ctx) as (svc, s):
        with ctx.tracer.start_as_current_span("browser page load") as span:
            span.set_attribute(URL_FULL, ctx.redactor.text(url.split("?", 1)[0]))
            response: Any = None
            lost: list[BaseException] = []  # gotos the page's own navigation aborted: asked again

            def again(exc: BaseException) -> bool:
                return _navigation_interrupted(exc) or any(exc is e for e in lost)

            tries = retrying(attempts=_NAVIGATE_TRIES, retry_on=again, deadline=monotonic_deadline())
            async for attempt in tries:
                with attempt:
                    before = str(s.page.url)
                    try:
                        response = await goto(ctx, s, s.page.goto(url, wait_until="load"))
                    except ActionError as exc:
                        if _navigation_interrupted(exc):
                            await _settle(s.page)
                        elif await _aborted_by_the_page(s.page, exc, before):
                            lost.append(exc)
                        if "Download is starting" not in exc.message:
                            raise
                        response = None  # the URL is a file: it downloads into the workspace
            s.md_cache = None
            await deny_if_blocked(s, response, by_page=False)
            if response is not None:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, response.status)
        artifacts = await await_downloads(ctx, s, wait_for_start=response is None)
        out = await page_result(ctx, s, response.status if response else None, artifacts)
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
    async with open_session(ctx) as (_, s):
        text, meta = await read_page(ctx, s, args.format, args.selector)
        body, next_offset = paginate(text, args.offset, page_chars(ctx))
        data = finish(s, {**meta, "format": args.format, "offset": args.offset, "next_offset": next_offset, "length": len(text)})
        if not body:
            body = "(empty page: call browser_navigate first)" if meta["url"] == "about:blank" else "(empty)"
        return ActionOutput(output=body + notes(data), data=data)


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
    async with open_session(ctx) as (svc, s):
        page = s.page
        locator = page.locator(args.selector).first if args.selector else page.get_by_text(args.text).first

        element = args.selector or f"text={args.text}"

        async def click() -> None:
            commits, downloads = s.commits, len(s.downloads)
            requests: list[Any] = []
            ended: list[float] = []
            loop = asyncio.get_running_loop()

            main = main_frame(page)

            def on_request(request: Any) -> None:
                if request.is_navigation_request() and request.frame == main:
                    requests.append(request)
                    s.changed.set()

            def on_end(request: Any) -> None:
                if request in requests:
                    ended.append(loop.time())
                    s.changed.set()

            # The navigation requests and their ends, without subscribing the page to all its requests (``_quiet``).
            unlisten = listen(page, {"request": on_request, "requestfailed": on_end, "requestfinished": on_end})
            try:
                # Playwright's click waits for the element to be attached, visible, stable, enabled and not
                # covered: no probe of our own before it (a round trip: ~8 ms, 2.4 % of click + content on a
                # 50 KB page, measured alternating; see benchmarks.md).
                await _click(locator, element, element_timeout_ms(ctx))
                # Wait until the navigation the click started commits, turns into a download or a new tab, or
                # clearly is not coming: no navigation request within the first moment (0.1 s; 0.5 s for a link
                # or a form button, which may start it a moment later), or its request ended 0.5 s ago without a
                # page. (Playwright 1.65's click itself waits for a navigation requested while it dispatches the
                # click, usually up to its commit; not for one a handler's timer starts later.) Woken by the
                # events themselves (``s.changed``), not by polling.
                first = loop.time() + _NAVIGATION_START_S
                navigates: bool | None = None  # asked only when no navigation showed within the first moment
                while True:
                    s.changed.clear()  # (events only run while we await: none is lost between here and the wait)
                    if s.commits != commits or len(s.downloads) != downloads or s.popups:
                        break
                    now = loop.time()
                    if not requests and now >= first:
                        if navigates is not None:
                            break
                        navigates = await _navigates(locator)
                        first += _LINK_NAVIGATION_START_S - _NAVIGATION_START_S if navigates else 0.0
                        continue
                    if ended and now >= ended[-1] + 0.5:
                        break
                    until = ended[-1] + 0.5 if ended else (None if requests else first)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if until is None else max(0.0, until - now)):
                            await s.changed.wait()
            finally:
                unlisten()
            await wait_loaded(page, 5.0)  # (``wait_for_load_state`` without its log messages: ``_quiet``)

        # Any click may have an effect (a form button, a link, a script's handler): cut short, never retryable.
        effect = f"the click on {element!r}"
        before = s.commits
        await goto(ctx, s, click(), effect=effect)
        with after(effect):
            s.md_cache = None
            artifacts = await await_downloads(ctx, s, wait_for_start=False)
            if s.popups:
                await svc.adopt_popups(s, adopt=True)
            await deny_if_blocked(s)
            # A new document: the next click needs Playwright's selector engine there; installed once our read
            # has answered, beside the conversion (``_warm``).
            warm = (lambda: warm_selectors(s)) if s.commits != before else None
            out = await page_result(ctx, s, None, artifacts, then=warm)
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
    async with open_session(ctx) as (svc, s):
        page = s.page
        locator = page.locator(args.selector).first
        is_file = await guarded(
            ctx,
            s,
            locator.evaluate(
                "e => e.tagName === 'INPUT' && (e.type || '').toLowerCase() === 'file'", timeout=element_timeout_ms(ctx)
            ),
            element=args.selector,
        )
        uploaded: list[str] = []
        if is_file:
            files, uploaded = await read_uploads(ctx, args.selector, args.value)
            await guarded(ctx, s, locator.set_input_files(files, timeout=element_timeout_ms(ctx)), element=args.selector)
        else:
            await guarded(ctx, s, locator.fill(args.value, timeout=element_timeout_ms(ctx)), element=args.selector)
        if not args.submit:
            what = f"Attached {', '.join(uploaded)} to" if is_file else "Filled"
            data = finish(s, {"url": page.url, **({"uploaded": uploaded} if uploaded else {})})
            return ActionOutput(output=f"{what} {args.selector}." + notes(data), data=data)

        async def submit() -> None:
            async with page.expect_navigation(wait_until="load"):
                if is_file:  # Enter does nothing on a file input: submit its form
                    await locator.evaluate("e => e.form && e.form.requestSubmit()")
                else:
                    await locator.press("Enter")

        effect = f"submitting the form of {args.selector!r}"
        await goto(ctx, s, submit(), effect=effect)
        with after(effect):
            s.md_cache = None
            await deny_if_blocked(s)
            out = await page_result(ctx, s, None, await await_downloads(ctx, s, wait_for_start=False))
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
    async with open_session(ctx) as (_, s):
        # (a screenshot cut short by a navigation fails with a protocol error)
        png = await read_landed(
            ctx,
            s,
            lambda: s.page.screenshot(full_page=args.full_page, type="png"),
            lambda _: str(s.page.url),
            interrupted=("Protocol error",),
        )
        artifact = await asyncio.to_thread(ctx.workspace.save_unique, "screenshots/page.png", png)
        data = finish(s, {"url": s.page.url, "path": artifact.path})
        return ActionOutput(
            output=f"Saved screenshot {artifact.path} ({artifact.size} bytes) of {s.page.url}" + notes(data),
            data=data,
            artifacts=[artifact],
        )


@action(
    "browser.links", description="List the links on the current page: text and absolute URL.", read_only=True, timeout=_timeout
)
async def browser_links(ctx: ActionContext, args: NoInput) -> ActionOutput:
    async with open_session(ctx) as (_, s):
        links = await read_links(ctx, s)
        lines = [f"- [{text or '(no text)'}]({href})" for text, href in links]
        data = finish(s, {"url": s.page.url, "links": [{"text": t, "url": h} for t, h in links]})
        return ActionOutput(output=("\n".join(lines) or "(no links)") + notes(data), data=data)


@action("browser.back", description="Go back to the previous page in this session's tab and return it.", timeout=_timeout)
async def browser_back(ctx: ActionContext, args: NoInput) -> ActionOutput:
    async with open_session(ctx) as (svc, s):
        response = await goto(ctx, s, s.page.go_back(wait_until="load"))
        s.md_cache = None
        if response is None and s.page.url in ("about:blank", ""):
            raise ActionError("invalid_input", "there is no previous page in this session")
        await deny_if_blocked(s, response)
        out = await page_result(ctx, s, response.status if response else None)
        await svc.save_profile(s)
        return out
