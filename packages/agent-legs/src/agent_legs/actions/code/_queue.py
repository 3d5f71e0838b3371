"""Admission to the code sandbox: at most ``settings.code.max_sessions`` sessions hold a live kernel at once.

Each session's kernel is a container of its own (stateful: its variables live until ``code.reset``, the
session's close, ``settings.code.session_ttl_s`` of idleness, or a call that kills it), so the number of
containers grows with the number of sessions. This bounds it: a session without a kernel waits for one
of ``max_sessions`` places (first come, first served: ``agent_legs._queue``) before it takes a kernel from
the warm pool or starts one; a place is freed when the kernel holding it is killed or removed (reset,
close, the idle reaper, a timeout, its host taken out).

Invariants:

* At most ``max_sessions`` kernels hold a place (the warm pool's containers, ``pool_size`` per host, are
  not sessions' and come on top); ``0`` means no bound.
* A place is taken once per kernel and given back exactly once, whichever way the kernel ends
  (``free`` is idempotent); a call cut short while queued takes nothing.
* The queue's wait ends at the call's ``ready_by`` (its ``timeout_s`` plus ``policy.code.queue_timeout_s``;
  the code's own ``timeout_s`` starts once it has a kernel); a call whose wait runs out in the queue is a
  retryable ``timeout`` naming its position (in the message and in ``data``: ``queued_behind``,
  ``queued_s``) and saying that nothing ran.

Threat model: many sessions (or one agent opening sessions in a loop) exhaust the host's memory and
processes with containers: the bound turns that into a queue the caller is told about.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..._errors import ActionError
from ..._queue import FifoSlots, QueuedTooLong, Ticket

__all__ = ["SandboxQueue"]

_MARGIN_S = 0.02  # the queue gives up just before the call's own deadline, so the caller hears why


class SandboxQueue:
    """The places for live session kernels (``settings.code.max_sessions``) and who holds one."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.slots = FifoSlots(max_sessions) if max_sessions > 0 else None
        self._held: set[Any] = set()  # kernels holding a place

    @property
    def waiting(self) -> int:
        return self.slots.waiting if self.slots is not None else 0

    @property
    def busy(self) -> int:
        return self.slots.busy if self.slots is not None else len(self._held)

    async def admit(self, deadline: float | None) -> None:
        """Wait for a place (at most until ``deadline``, loop time); a retryable ``timeout`` with the position if
        it passes first. The caller then ``hold``s the place with a kernel, or ``release``s it."""
        if self.slots is None:
            return
        within = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time() - _MARGIN_S)
        ticket = Ticket()
        try:
            await self.slots.acquire(within, ticket)
        except QueuedTooLong as exc:
            waiting = max(0, exc.ahead - self.slots.busy)
            raise ActionError(
                "timeout",
                f"no sandbox was free for this session: settings.code.max_sessions={self.max_sessions} sessions "
                f"hold one (each until it is reset, closed or idle for settings.code.session_ttl_s); this call "
                f"queued {exc.waited_s:.1f} s (its timeout_s plus policy.code.queue_timeout_s) and was still behind "
                f"{exc.ahead} ({waiting} other session(s) queued before it); nothing ran",
                retryable=True,
                hint="The sandboxes are busy with other sessions, not broken: retry in a moment.",
                rule="policy.code.queue_timeout_s",
                data={"queued_behind": exc.ahead, "queued_s": round(exc.waited_s, 2)},
            ) from None

    def hold(self, kernel: Any) -> None:
        """``kernel`` now holds the place its session was admitted to."""
        self._held.add(kernel)

    def release(self) -> None:
        """Give back a place admitted but not taken (starting the kernel failed or was cut short)."""
        if self.slots is not None:
            self.slots.release()

    def free(self, kernel: Any) -> None:
        """``kernel`` ended: its place (if it held one) goes to the session that has waited longest. Idempotent."""
        if kernel in self._held:
            self._held.discard(kernel)
            self.release()
