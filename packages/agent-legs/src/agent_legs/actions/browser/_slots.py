"""The browser's load slots: a first-come, first-served queue that knows each waiting call's place.

Page loads (navigate, click, fill with submit, back) and opening a session's context and tab take one
of ``settings.browser.max_concurrent_loads`` slots: past a few loads per core Chromium collapses rather
than slows. When every slot is busy a call queues (backpressure) instead of piling onto Chromium, and
waits its turn within its own deadline; one whose deadline passes in the queue learns how many calls
were ahead of it, and that nothing was loaded.

Invariants:

* First come, first served: a slot freed goes to the call that has waited longest (no overtaking by a
  newcomer, whatever the event loop's scheduling).
* A call cut short while queued (its deadline, a cancelled caller) leaves the queue and takes nothing;
  one cut short just as a slot was handed to it gives the slot on, so no slot is ever lost.
* ``ahead(waiter)`` is the number of calls that hold a slot or queue before it: the position the
  error message and the span report (``agent_legs.browser.queue_depth`` is the value on arrival).

Threat model: none of its own: slots only order work; the deadlines bound it (``_deadline``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from dataclasses import dataclass
from types import TracebackType

__all__ = ["TICKET", "LoadSlots", "QueuedTooLong", "Ticket", "calls"]


@dataclass
class Ticket:
    """What one call went through in the queue (every slot it waited for): the span reports it."""

    depth: int = 0  # the most calls found ahead on arrival (0: never queued)
    waited_s: float = 0.0
    gave_up_behind: int | None = None  # calls still ahead when it stopped waiting (its deadline, a cancel)


# The current call's ticket (set by the call's frame, ``_call.open_session``); slots taken outside a call
# record nothing.
TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("agent_legs_browser_ticket", default=None)


def calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


class QueuedTooLong(TimeoutError):
    """The deadline passed while the call waited for a slot; ``ahead`` calls were before it then."""

    def __init__(self, ahead: int, waited_s: float) -> None:
        super().__init__(f"queued behind {ahead} calls for {waited_s:.1f} s")
        self.ahead = ahead
        self.waited_s = waited_s


class LoadSlots:
    """``size`` slots handed out in arrival order (an ``async with`` takes one without a deadline)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Calls queued for a slot now."""
        return sum(1 for f in self._queue if not f.done())

    def locked(self) -> bool:
        """Every slot is taken (a new call would queue)."""
        return self.busy >= self.size

    def depth(self) -> int:
        """How many calls a call arriving now would find ahead of it (loading or queued)."""
        return self.busy + self.waiting if self.locked() or self._queue else 0

    async def acquire(self, within: float | None = None) -> int:
        """Take a slot, waiting at most ``within`` seconds; returns how many calls were ahead on arrival.

        Raises ``QueuedTooLong`` (a ``TimeoutError``) naming the calls still ahead when time runs out.
        """
        ahead = self.depth()
        if not self._queue and self.busy < self.size:
            self.busy += 1
            return 0
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.append(waiter)
        started = loop.time()
        ticket = TICKET.get()
        if ticket is not None:
            ticket.depth = max(ticket.depth, ahead)
        try:
            async with asyncio.timeout(within):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_one()  # handed a slot as it was cut short: pass it on
            else:
                waiter.cancel()
            behind = self._ahead_of(waiter)
            self._remove(waiter)
            waited = loop.time() - started
            if ticket is not None:
                ticket.waited_s += waited
                ticket.gave_up_behind = behind
            if isinstance(exc, TimeoutError):
                raise QueuedTooLong(behind, waited) from None
            raise
        if ticket is not None:
            ticket.waited_s += loop.time() - started
        return ahead

    def release(self) -> None:
        self._release_one()

    def _release_one(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the longest waiter: busy unchanged
                return
        self.busy = max(0, self.busy - 1)

    def _ahead_of(self, waiter: asyncio.Future[None]) -> int:
        before = 0
        for f in self._queue:
            if f is waiter:
                break
            if not f.done():
                before += 1
        return self.busy + before

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
