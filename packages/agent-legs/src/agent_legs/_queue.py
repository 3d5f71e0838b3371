"""Backpressure: a bounded number of slots handed out first come, first served, each waiter knowing its place.

The one queue primitive of the families that bound a scarce resource: the browser's page loads
(``actions/browser/_slots``) and the code sandbox's live sessions (``actions/code/_queue``). When every
slot is taken a call queues instead of piling onto the resource, and waits its turn within a time it
is given; one whose time passes in the queue learns how many calls were ahead of it (``QueuedTooLong``),
so the caller can be told ``retryable`` with its position, never a bare timeout.

Invariants:

* First come, first served: a slot freed goes to the call that has waited longest (no overtaking by a
  newcomer, whatever the event loop's scheduling).
* A call cut short while queued (its time, a cancelled caller) leaves the queue and takes nothing; one
  cut short just as a slot was handed to it gives the slot on, so no slot is ever lost or counted twice.
* ``depth()`` is how many calls a newcomer finds ahead of it (holding a slot or queued); the position a
  call that gives up reports is the number still ahead of it then.
* Not thread-safe: one event loop owns a ``FifoSlots`` (the runtime's).

Threat model: none of its own: slots only order work; the callers' deadlines bound it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from types import TracebackType

__all__ = ["FifoSlots", "QueuedTooLong", "Ticket", "calls"]


@dataclass
class Ticket:
    """What one call went through in a queue (every slot it waited for)."""

    depth: int = 0  # the most calls found ahead on arrival (0: never queued)
    waited_s: float = 0.0
    gave_up_behind: int | None = None  # calls still ahead when it stopped waiting (its time ran out, a cancel)


def calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


class QueuedTooLong(TimeoutError):
    """The time a call was given passed while it waited for a slot; ``ahead`` calls were before it then."""

    def __init__(self, ahead: int, waited_s: float) -> None:
        super().__init__(f"queued behind {calls(ahead)} for {waited_s:.1f} s")
        self.ahead = ahead
        self.waited_s = waited_s


class FifoSlots:
    """``size`` slots handed out in arrival order (an ``async with`` takes one without a time limit)."""

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
        """How many calls a call arriving now would find ahead of it (holding a slot or queued)."""
        return self.busy + self.waiting if self.locked() or self._queue else 0

    async def acquire(self, within: float | None = None, ticket: Ticket | None = None) -> int:
        """Take a slot, waiting at most ``within`` seconds; returns how many calls were ahead on arrival.

        Raises ``QueuedTooLong`` (a ``TimeoutError``) naming the calls still ahead when time runs out.
        ``ticket`` (if given) records the depth found, the time waited and, on giving up, the position.
        """
        ahead = self.depth()
        if not self._queue and self.busy < self.size:
            self.busy += 1
            return 0
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.append(waiter)
        started = loop.time()
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
