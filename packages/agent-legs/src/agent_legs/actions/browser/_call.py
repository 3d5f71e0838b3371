"""The frame every browser call runs in: its deadline, its session's lock, and how a page operation's
failure becomes an error the model can act on.

Invariants:

* ``policy.browser.timeout_s`` bounds the whole call (``_deadline``), time queued for a load slot aside
  (bounded by ``policy.browser.queue_timeout_s``: ``_slots``); the browser's (re)launch alone is also
  exempt (bounded by the runtime's deadline, ``timeout_s + 10 s``), since a launch cut short would leave
  no browser for the next call.
* One call at a time per session (one tab): waiting for the session's previous call counts against the
  deadline and ends in a retryable ``timeout`` that says nothing was done.
* Before a call uses the tab, a crashed or closed tab is replaced (same context: cookies kept), what a
  browser crash lost is reported, stray popups are closed and a page that navigated itself to a blocked
  URL is left (``_blocked``).
* A page operation that hangs past the deadline closes the tab (a fresh one replaces it, same context):
  a hostile page cannot wedge the session. A Playwright failure is ``failed``/``timeout``/``not_found``
  with its first line, never a traceback.
* An operation with an effect on a server (a click, a submitted form) that is cut short is never
  ``retryable`` (it may have taken effect); steps after it that fail say it was done.
* Navigations (and opening a session's context and tab) take one of the browser's load slots
  (backpressure: they queue, first come first served, rather than pile onto Chromium). The queue's wait
  is bounded by ``policy.browser.queue_timeout_s`` and does not count against ``timeout_s``: the work's
  budget starts when the slot is granted (``_slots``). A call whose queue allowance runs out is a
  retryable ``timeout`` saying how many calls were ahead of it (also in ``data``: ``queued_behind``,
  ``queued_s``) and that nothing was loaded. The action's span carries the queue depth it found and the
  time it waited (``agent_legs.browser.queue_*``).
  An HTTPS tunnel the proxy refused (``ERR_TUNNEL...``) is ``denied`` with its rule, not ``failed``.
* A session whose Playwright server (``ws_endpoints``) died: the call is ``unavailable``, naming the
  server (``_pool``), not ``failed``.

Threat model: a hostile page hangs, crashes its renderer, navigates in the middle of an operation or
loops through blocked URLs: every case ends in a bounded, documented error and a usable session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._telemetry._semconv import AGENT_LEGS_BROWSER_QUEUE_DEPTH, AGENT_LEGS_BROWSER_QUEUE_WAIT_MS
from ._blocked import blocked_navigation, denial_for, leave_blocked_page, leave_if_blocked
from ._deadline import DEADLINE, in_background, remaining
from ._service import BrowserService
from ._session import BrowserSession
from ._slots import TICKET, QueuedTooLong, Ticket, calls

__all__ = ["after", "element_timeout_ms", "goto", "guarded", "open_session"]

_ELEMENT_TIMEOUT_S = 5.0  # how long click/fill wait for their element to appear (pages render, scripts run)
_BUSY_HINT = "The browser is busy, not broken: retry in a moment, or run fewer browser sessions at once."
_MAY_HAVE_HAPPENED_HINT = (
    "Do not repeat it blindly: check first whether it took effect (browser_content, or open the "
    "page that shows the result), or ask the user."
)


@contextlib.asynccontextmanager
async def open_session(ctx: ActionContext) -> AsyncIterator[tuple[BrowserService, BrowserSession]]:
    """The session's browser state, serialized per session (one tab: one action at a time)."""
    total = ctx.policy.browser.timeout_s
    svc = await ctx.service(BrowserService)
    # The browser's (re)launch, once per process or crash, is not cut short by a call's deadline (it is bounded
    # by the runtime's, timeout_s + 10 s): a launch cancelled part-way would leave no browser for the next call.
    async with svc.launch_lock:
        await svc.ensure_browser()
    queue_s = ctx.policy.browser.queue_timeout_s
    token = DEADLINE.set(asyncio.get_running_loop().time() + total)
    ticket = Ticket(queue_s=queue_s)
    ticket_token = TICKET.set(ticket)
    try:
        try:
            # a relaunch, a new context and tab (which wait for a load slot: that wait is not the tab's time)
            async with asyncio.timeout(remaining(total) + queue_s):
                s = await svc.session(ctx.session)
        except TimeoutError as exc:
            behind = ticket.gave_up_behind
            if isinstance(exc, QueuedTooLong) or behind is not None:
                raise _queued_too_long(svc, behind or 0, ticket.waited_s, "this session's tab could not be opened") from None
            raise ActionError(
                "timeout",
                f"the browser could not open this session's tab within {total:g} s "
                "(policy.browser.timeout_s); nothing was loaded",
                retryable=True,
                hint=_BUSY_HINT,
            ) from None
        async with _locked_session(svc, s, ctx) as pair:
            yield pair
    finally:
        TICKET.reset(ticket_token)
        DEADLINE.reset(token)
        ctx.set_attribute(AGENT_LEGS_BROWSER_QUEUE_DEPTH, ticket.depth)
        ctx.set_attribute(AGENT_LEGS_BROWSER_QUEUE_WAIT_MS, round(ticket.waited_s * 1000, 1))


@contextlib.asynccontextmanager
async def _locked_session(
    svc: BrowserService, s: BrowserSession, ctx: ActionContext
) -> AsyncIterator[tuple[BrowserService, BrowserSession]]:
    total = ctx.policy.browser.timeout_s
    try:
        async with asyncio.timeout(remaining(total)):
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
        if s.gone:  # its server died while this call waited for the session's previous one
            raise svc.lost_on_server(s)
        if s.page.is_closed():  # the tab crashed or was closed: a fresh one in the same context
            await svc.new_tab(s)
        lost = svc.lost.pop(ctx.session, None)
        if lost:
            s.events.append(lost)
        if s.popups:
            await svc.adopt_popups(s, adopt=False)
        await leave_if_blocked(s)  # the page navigated itself (timer, refresh) to a blocked URL since last time
        yield svc, s
    finally:
        s.lock.release()


async def guarded(ctx: ActionContext, s: BrowserSession, coro: Any, element: str | None = None, effect: str | None = None) -> Any:
    """Run a page operation within what is left of the call's deadline; a hung page is closed so the session
    recovers.

    ``element`` names the selector of an element operation: Playwright giving up waiting for that element
    is the model's mistake (``not_found``), not a hung page, and keeps the tab. ``effect`` says what the
    operation may have done on a server (a click, a submitted form): cut short, it is never called
    retryable, since it may have taken effect.
    """
    seconds = ctx.policy.browser.timeout_s
    try:
        async with asyncio.timeout(remaining(seconds)):
            return await coro
    except ActionError:
        raise
    except asyncio.CancelledError:
        # the runtime's deadline or the caller gave up: stop the page's work too
        in_background(s.page.close())
        raise
    except Exception as exc:
        timed_out = isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError"
        if element is not None and timed_out and not isinstance(exc, TimeoutError):
            raise ActionError(
                "not_found",
                f"no visible, enabled element matches {element!r} (waited {element_timeout_ms(ctx) / 1000:g} s)",
                hint="Check the selector against the form fields and links listed with the page (browser_content).",
            ) from None
        maybe = f" after {effect}, which may have taken effect (a form sent, an order placed) or not" if effect else ""
        if not timed_out:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if s.server is not None and await _server_died(s, message):
                raise s.service.lost_on_server(s, effect) from None
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
        ticket = TICKET.get()
        queued = (
            f"; before that it queued for a load slot behind up to {calls(ticket.depth)} for {ticket.waited_s:.1f} s, "
            "which did not count"
            if ticket is not None and ticket.waited_s >= 0.5  # worth telling: the machine is busy
            else ""
        )
        raise ActionError(
            "timeout",
            f"the page did not respond within {seconds:g} s (policy.browser.timeout_s{queued}){maybe}; "
            "the tab was closed and the session continues with a fresh tab",
            retryable=not effect,
            hint=_MAY_HAVE_HAPPENED_HINT if effect else (_BUSY_HINT if queued else None),
        ) from None


def _queued_too_long(svc: BrowserService, ahead: int, waited_s: float, what: str) -> ActionError:
    """A call whose queue allowance ran out: retryable, with its position (in the message and in ``data``)."""
    ticket = TICKET.get()
    allowance = ticket.queue_s if ticket is not None and ticket.queue_s is not None else waited_s
    return ActionError(
        "timeout",
        f"{what}: the browser was busy with other sessions' page loads; this call queued {waited_s:.1f} s "
        f"(policy.browser.queue_timeout_s={allowance:g}; settings.browser.max_concurrent_loads={svc.max_loads}) "
        f"and was still queued behind {calls(ahead)}; nothing was loaded",
        retryable=True,
        hint=_BUSY_HINT,
        data={"queued_behind": ahead, "queued_s": round(waited_s, 2)},
    )


@contextlib.contextmanager
def after(effect: str) -> Iterator[None]:
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


def element_timeout_ms(ctx: ActionContext) -> float:
    """How long an element operation waits for its element (at most half the call's timeout)."""
    return min(_ELEMENT_TIMEOUT_S, ctx.policy.browser.timeout_s / 2) * 1000


async def _server_died(s: BrowserSession, message: str) -> bool:
    """Whether the session's Playwright server went away. A server shutting down first aborts its pages
    (``net::ERR_ABORTED``, "... has been closed") and only then drops the connection, and the failed operation
    may be told before the pool sees the disconnect. Such a failure waits for it (up to 2 s); any other is
    told apart by one round trip to the context (bounded): a server that answers is alive."""
    if "closed" not in message.lower() and "ERR_ABORTED" not in message and not s.page.is_closed():
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                if not s.gone:
                    await s.context.cookies()
                    return False  # the server answers: the failure was the page's own
    for _ in range(50):
        if s.gone:
            return True
        await asyncio.sleep(0.04)
    return s.gone


async def _fresh_tab(s: BrowserSession) -> None:
    """Replace a hung tab now (its close may complete later), keeping the context: cookies, storage, login."""
    old = s.page
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await old.close()
    with contextlib.suppress(Exception):
        await s.service.new_tab(s)


async def goto(ctx: ActionContext, s: BrowserSession, coro: Any, effect: str | None = None) -> Any:
    """A navigation; a tunnel refused by the proxy (https to a denied host) surfaces as ``denied``.

    It waits for one of the browser's load slots first (``settings.browser.max_concurrent_loads``), at most
    what is left of ``policy.browser.queue_timeout_s``; the load's budget starts when the slot is granted
    (``_slots``). ``effect``: see ``guarded``.
    """
    try:
        await s.service.loads.acquire()
    except BaseException as exc:
        if asyncio.iscoroutine(coro):
            coro.close()  # never started: nothing to stop
        if not isinstance(exc, QueuedTooLong):
            raise
        raise _queued_too_long(s.service, exc.ahead, exc.waited_s, "the page was not loaded") from None
    try:
        return await guarded(ctx, s, coro, effect=effect)
    except ActionError as exc:
        d = denial_for(s, "chrome-error:") if exc.type == "failed" and "ERR_TUNNEL" in exc.message else None
        if d is not None:
            await leave_blocked_page(s)
            raise blocked_navigation(d.url, d.rule) from None
        raise
    finally:
        s.service.loads.release()
