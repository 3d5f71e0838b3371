"""The browser's load slots: a first-come, first-served queue (``agent_legs._queue``) whose wait does not eat
the time the work needs.

Page loads (navigate, click, fill with submit, back) and opening a session's context and tab take one
of ``settings.browser.max_concurrent_loads`` slots: past a few loads per core Chromium collapses rather
than slows. When every slot is busy a call queues (backpressure) instead of piling onto Chromium.

Admission (issue 19, item 4: backpressure, not timeouts):

* A call may wait in the queue for ``policy.browser.queue_timeout_s`` in all (every slot it waits for
  together); its work's budget, ``policy.browser.timeout_s``, does not run while it waits: the call's
  deadline (``_deadline.DEADLINE``) moves on by the time waited when the slot is granted. So a load
  granted late still has its whole timeout, and the call as a whole is bounded by
  ``timeout_s + queue_timeout_s`` (the runtime's deadline adds its slack on top).
* One whose queue allowance runs out learns how many calls were ahead of it (``QueuedTooLong``) and
  that nothing was loaded (a retryable ``timeout`` naming its position: ``_call``).

Invariants (the queue's own: ``agent_legs._queue``): first come, first served; a call cut short while
queued takes nothing and loses no slot; ``TICKET`` records what the current call went through
(``agent_legs.browser.queue_depth`` is the depth found on arrival, ``queue_wait_ms`` the time waited).

Threat model: none of its own: slots only order work; the deadlines bound it (``_deadline``).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from ..._queue import FifoSlots, QueuedTooLong, calls
from ..._queue import Ticket as _QueueTicket
from ._deadline import DEADLINE

__all__ = ["TICKET", "LoadSlots", "QueuedTooLong", "Ticket", "calls"]


@dataclass
class Ticket(_QueueTicket):
    """What one call went through in the queue, and how long it may queue in all (``None``: no bound)."""

    queue_s: float | None = None

    def queue_left(self) -> float | None:
        return None if self.queue_s is None else max(0.0, self.queue_s - self.waited_s)


# The current call's ticket (set by the call's frame, ``_call.open_session``); slots taken outside a call
# record nothing and wait without a bound.
TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("agent_legs_browser_ticket", default=None)


class LoadSlots(FifoSlots):
    """``size`` load slots; inside a call, the wait is bounded by its queue allowance and credited to its deadline."""

    async def acquire(self, within: float | None = None, ticket: _QueueTicket | None = None) -> int:
        """Take a slot. Inside a call (``TICKET`` set) and without an explicit ``within``, wait at most what is
        left of the call's queue allowance; once granted, the call's deadline moves on by the time waited
        (the work's budget starts now). Raises ``QueuedTooLong`` naming the calls still ahead."""
        current = TICKET.get()
        if ticket is None:
            ticket = current
        if within is None and current is not None:
            within = current.queue_left()
        before = ticket.waited_s if ticket is not None else 0.0
        ahead = await super().acquire(within, ticket)
        waited = (ticket.waited_s - before) if ticket is not None else 0.0
        deadline = DEADLINE.get()
        if waited > 0 and deadline is not None and ticket is current:
            DEADLINE.set(deadline + waited)  # the queue's wait is not the work's time
        return ahead
