"""The live feed: every new action-log entry, pushed to each open page as a server-sent event.

Each connection subscribes to the ``LogView`` with its own filters and a bounded queue fed from the
follower thread (``call_soon_threadsafe``); a connection that cannot keep up loses its oldest pending
rows, never the server's memory. The event ``action`` carries the row as HTML rendered by the same
autoescaped template as the page (htmx's SSE extension inserts it at the top of the table).
The page passes ``since`` (the newest entry it rendered; a reconnecting browser sends
``Last-Event-ID``): the connection subscribes first, then sends what was added after ``since``, so a
call written between the page's render and the connection is neither lost nor shown twice.
New approvals reach an open approvals page the same way (``approvals_response``).
Connections end when the browser goes away or the console stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request

from ._approvals import Approvals
from ._data import Filters, LogView

__all__ = ["approvals_response", "feed_response"]

_QUEUE_MAX = 500


def feed_response(
    request: Request,
    view: LogView,
    filters: Filters,
    since: int,
    render: Callable[[dict[str, Any]], str],
    stopping: asyncio.Event,
) -> EventSourceResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_MAX)

    def put(entry: dict[str, Any]) -> None:
        if queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
        queue.put_nowait(entry)

    def notify(entry: dict[str, Any]) -> None:  # on the follower thread
        if filters.keep(entry):
            loop.call_soon_threadsafe(put, entry)

    async def events() -> AsyncIterator[dict[str, str]]:
        unsubscribe = view.subscribe(notify)  # first: nothing added from now on is missed
        seen = since
        try:
            yield {"event": "ready", "data": "live"}
            for entry in view.since(since, filters):  # added between the page's render and now
                seen = entry["_seq"]
                yield {"event": "action", "id": str(seen), "data": render(entry).replace("\n", " ")}
            while not stopping.is_set():
                try:
                    entry = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if entry["_seq"] <= seen:  # already sent while catching up
                    continue
                seen = entry["_seq"]
                yield {"event": "action", "id": str(seen), "data": render(entry).replace("\n", " ")}
        finally:
            unsubscribe()

    return EventSourceResponse(events(), ping=15)


_APPROVALS_POLL_S = 1.0


def approvals_response(
    request: Request, approvals: Approvals, known: set[str], render: Callable[[Any], str], stopping: asyncio.Event
) -> EventSourceResponse:
    """New pending approvals pushed to an open approvals page (``approval`` events, one card each):
    the store is read every second on the server; cards already on the page (``known``) are not sent
    again, so a half-typed message or edit is never replaced."""

    async def events() -> AsyncIterator[dict[str, str]]:
        sent = set(known)
        while not stopping.is_set() and not await request.is_disconnected():
            try:
                rows = await approvals.pending()
            except Exception as exc:  # a store that is down: say so, keep trying
                yield {"event": "store", "data": f"the state store cannot be read: {type(exc).__name__}"}
                rows = []
            for row in rows:
                if row.id not in sent:
                    sent.add(row.id)
                    yield {"event": "approval", "data": render(row).replace("\n", " ")}
            await asyncio.sleep(_APPROVALS_POLL_S)

    return EventSourceResponse(events(), ping=15)
