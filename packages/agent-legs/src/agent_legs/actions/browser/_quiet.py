"""Following a tab's navigation without protocol messages of our own: what a click waits on.

Playwright's client sends its server a message for things that look local. Adding the first (or removing
the last) listener of a page's ``request``, ``requestfinished`` or ``requestfailed`` event sends an
``updateSubscription`` (the server then reports *every* request of the page, each subresource too), and
``wait_for_load_state`` sends three or four ``__waitInfo__`` messages (its log for traces), even when the
state was reached long ago. Each message is a write to the driver's pipe that wakes its process; on a
busy machine a few of them per click add milliseconds (measured: benchmarks.md, browser notes, round 5).

What the click needs arrives anyway. The server always reports a *navigation* request, with its end
(finished or failed), whatever the subscriptions (Playwright's ``BrowserContextDispatcher``: a request
``isNavigationRequest()`` is always dispatched, and the end of a request it dispatched is too), and the
main frame's load states come with every navigation (``loadstate`` events). So:

* ``listen`` adds a handler to the page's own event emitter, beneath the client's subscribing ``on``:
  the handler sees the navigation requests (and their ends) it would have seen through ``page.on``, and
  the page is not subscribed to its subresources. Handlers get Playwright's internal ``Request``
  objects (``is_navigation_request()``, ``frame`` work on them).
* ``wait_loaded`` is ``page.wait_for_load_state("load")`` read from the state the client keeps for the
  main frame (the same set and event that method reads), without its log messages; it ends early when
  the tab closes or crashes (what follows reports that).

Both use attributes private to Playwright's client. Where they are missing (another Playwright version),
each falls back to the public call: slower by a few messages, never wrong. ``test_browser.py`` checks
that a click sends no subscription and no wait log, and that its wait still follows a navigation a
handler starts after the click and that brings no page.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

__all__ = ["listen", "main_frame", "wait_loaded"]


def _emitter_methods(impl: Any) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """The add/remove methods of the event emitter beneath Playwright's ``ChannelOwner`` (whose ``on``
    subscribes), bound to ``impl``; ``None`` if this Playwright is not built that way."""
    mro = type(impl).__mro__
    for i, cls in enumerate(mro[:-1]):
        if cls.__name__ == "ChannelOwner":
            base = mro[i + 1]
            add, remove = getattr(base, "add_listener", None), getattr(base, "remove_listener", None)
            if callable(add) and callable(remove):
                return add.__get__(impl), remove.__get__(impl)
            return None
    return None


def listen(page: Any, handlers: dict[str, Callable[[Any], None]]) -> Callable[[], None]:
    """Add ``handlers`` (event name -> handler) to ``page`` without subscribing it to its requests; the
    function returned removes them."""
    impl = getattr(page, "_impl_obj", None)
    methods = _emitter_methods(impl) if impl is not None else None
    # (else the public way: a subscription message each way)
    add, remove = methods if methods is not None else (page.on, page.remove_listener)
    for event, handler in handlers.items():
        add(event, handler)

    def stop() -> None:
        for event, handler in handlers.items():
            remove(event, handler)

    return stop


def main_frame(page: Any) -> Any:
    """The main frame as the handlers of ``listen`` see it (Playwright's internal object, else the public one)."""
    impl = getattr(page, "_impl_obj", None)
    return impl.main_frame if impl is not None else page.main_frame


async def wait_loaded(page: Any, timeout_s: float) -> None:
    """Until the tab's current document has fired ``load``, at most ``timeout_s`` (then, or when the tab
    closes or crashes, it returns: the read that follows reports what the page is)."""
    frame = getattr(page.main_frame, "_impl_obj", None)
    states = getattr(frame, "_load_states", None)
    emitter = getattr(frame, "_event_emitter", None)
    if not isinstance(states, set) or emitter is None:
        with contextlib.suppress(Exception):
            await page.wait_for_load_state("load", timeout=timeout_s * 1000)
        return
    if "load" in states:
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_state(state: Any) -> None:
        if state == "load" and not done.done():
            done.set_result(None)

    def on_gone(*_: Any) -> None:
        if not done.done():
            done.set_result(None)

    emitter.on("loadstate", on_state)  # a plain emitter (not a ChannelOwner): no message
    page.on("close", on_gone)  # (not request events: no subscription either)
    page.on("crash", on_gone)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await done
    finally:
        emitter.remove_listener("loadstate", on_state)
        page.remove_listener("close", on_gone)
        page.remove_listener("crash", on_gone)
