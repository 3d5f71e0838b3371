"""The current browser call's deadline, and cleanups that must not hold a call past it.

Invariants:

* ``policy.browser.timeout_s`` bounds the whole call: opening the session's context and tab, waiting
  for the session's previous call, the page operations and the downloads. Time queued for a load slot
  does not count: granting the slot moves ``DEADLINE`` on by the wait (``_slots``, bounded by
  ``policy.browser.queue_timeout_s``). The
  call's frame (``_call.open_session``) sets ``DEADLINE`` (event-loop time) once; every step asks
  ``remaining()`` instead of starting a fresh timeout of its own.
* A cleanup run with ``in_background`` (closing a context or a tab a deadline cut short) never blocks
  the call, is bounded (10 s), swallows its errors and stays referenced until it is done (a task
  nobody references may be garbage-collected mid-flight).

Threat model: a hostile page can make operations hang; it cannot stretch a call past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from typing import Any

__all__ = ["DEADLINE", "in_background", "monotonic_deadline", "remaining"]

_BACKGROUND: set[asyncio.Future[None]] = set()  # fire-and-forget cleanups, kept referenced until done
# When the current call must be over (loop time): policy.browser.timeout_s bounds the whole call, opening the
# session's context and tab included, not each step on its own; a load slot's queue wait moves it on (``_slots``).
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("agent_legs_browser_deadline", default=None)


def in_background(coro: Any) -> None:
    """Run a cleanup without waiting for it (errors ignored), kept referenced until it is done."""

    async def quietly() -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await coro

    task = asyncio.ensure_future(quietly())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def remaining(total_s: float) -> float:
    """Seconds left of the current call's deadline (``total_s`` outside a call)."""
    deadline = DEADLINE.get()
    if deadline is None:
        return total_s
    return max(0.0, deadline - asyncio.get_running_loop().time())


def monotonic_deadline() -> float | None:
    """The current call's deadline on ``time.monotonic()`` (what ``agent_legs._retry.retrying`` takes); ``None``
    outside a call."""
    deadline = DEADLINE.get()
    if deadline is None:
        return None
    return time.monotonic() + max(0.0, deadline - asyncio.get_running_loop().time())
