"""The pipeline's deadline of a handler that waits (one timer per event loop, not one per call), and
``Resumed``, which awaits the rest of a handler whose first step already ran.

``asyncio.timeout_at`` costs each call a ``Timeout``, two coroutines (enter, exit), a ``TimerHandle`` with
a copy of the caller's ``contextvars.Context``, and a push into the loop's timer heap; the cancelled
handle and the context it holds then stay in the heap until the loop sweeps it (they survive into the
collector's old generation at 50 calls in flight, which is what triggers full collections). Here a
call's deadline is one small object in its loop's ``_Watchdog`` set (added when the handler first waits,
discarded when it ends; for the pipeline's ``Resumed``, the ``Resumed`` itself: no second object held);
the loop has at most one timer, set for the earliest deadline in the set, moved earlier when a call
with an earlier deadline arrives and moved on when it fires. A timer whose call
ended early fires once, finds nothing due and is set for the next deadline (the loop's timer heap
holds one entry per loop, not one per call).

Invariants (those of ``asyncio.timeout_at``, which this replaces for the pipeline):

* **A deadline stops the work.** When it passes, the call's task is cancelled (``Task.cancel``, the
  same cancellation a ``Timeout`` sends), however many other calls are in flight on the loop;
  ``Deadline.expired`` then says the cancellation was ours.
* **A cancellation is ours only if nobody else asked for one.** ``end`` converts a ``CancelledError``
  into the timeout only when this deadline fired and the task's ``uncancel()`` brings its count back to
  what it was on entry (the caller's own cancellation, or an outer deadline of a nested call, still
  propagates); a fired deadline is always uncancelled once, as ``Timeout.__aexit__`` does.
* **Per loop, per thread.** A watchdog is used only by its own loop's thread; the map of loops is
  written under a lock and drops closed loops when a new loop registers.

Threat model: none of its own; the deadlines come from the policy and the action's spec, not the model.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Generator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from ._errors import ActionError

if TYPE_CHECKING:
    from ._registry import ActionSpec

__all__ = ["Deadline", "Resumed", "begin", "end", "timeout_error"]

_RESOLUTION = time.get_clock_info("monotonic").resolution  # as the loop rounds its timers (BaseEventLoop)


class Deadline:
    """One call's deadline on its loop's clock, and the task it stops."""

    __slots__ = ("at", "cancelling", "expired", "task")

    def __init__(self, at: float, task: asyncio.Task[Any]) -> None:
        self.at, self.task, self.expired = at, task, False
        self.cancelling = task.cancelling()


class _Watchdog:
    """The deadlines of one loop's calls in flight, and the loop's one timer for the earliest of them."""

    __slots__ = ("loop", "pending", "timer", "timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: set[Deadline] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")

    def add(self, deadline: Deadline) -> None:
        self.pending.add(deadline)
        if deadline.at < self.timer_at:
            self._schedule(deadline.at)

    def _schedule(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        # Its own empty context: the timer outlives the call that set it, and must not keep that call's
        # context (its span, its values) alive until it fires.
        self.timer = self.loop.call_at(at, self._fire, context=contextvars.Context())

    def _fire(self) -> None:
        self.timer, self.timer_at = None, float("inf")
        now = self.loop.time() + _RESOLUTION
        pending = self.pending
        due = [d for d in pending if d.at <= now]
        for deadline in due:
            pending.discard(deadline)
            deadline.expired = True
            deadline.task.cancel()
        if pending:
            self._schedule(min(d.at for d in pending))


_watchdogs: dict[asyncio.AbstractEventLoop, _Watchdog] = {}
_lock = threading.Lock()


def _watchdog(loop: asyncio.AbstractEventLoop) -> _Watchdog:
    with _lock:
        watchdog = _watchdogs.get(loop)
        if watchdog is None:
            for closed in [other for other in _watchdogs if other.is_closed()]:
                del _watchdogs[closed]
            watchdog = _watchdogs[loop] = _Watchdog(loop)
        return watchdog


def begin(loop: asyncio.AbstractEventLoop, at: float, deadline: Deadline | None = None) -> Deadline:
    """Start the current task's deadline at ``at`` (the loop's clock); pair it with ``end``. ``deadline``:
    an object of a ``Deadline`` subclass to arm (``Resumed`` is its own deadline), else a new one."""
    task = asyncio.current_task(loop)
    if task is None:
        raise RuntimeError("a deadline needs a task")
    if deadline is None:
        deadline = Deadline(at, task)
    else:
        deadline.at, deadline.task, deadline.expired, deadline.cancelling = at, task, False, task.cancelling()
    watchdog = _watchdogs.get(loop)
    (watchdog if watchdog is not None else _watchdog(loop)).add(deadline)
    return deadline


def end(loop: asyncio.AbstractEventLoop, deadline: Deadline, exc: BaseException | None) -> bool:
    """Stop ``deadline``; True when ``exc`` (what the awaited work raised, None if it returned) is the
    cancellation this deadline sent and nobody else asked for one: the caller reports its timeout."""
    watchdog = _watchdogs.get(loop)
    if watchdog is not None:
        watchdog.pending.discard(deadline)
    if not deadline.expired:
        return False
    return deadline.task.uncancel() <= deadline.cancelling and isinstance(exc, asyncio.CancelledError)


class Resumed(Deadline):
    """Awaits the rest of a handler's coroutine whose first step already ran (``step``: what that step
    waits on), under the handler's deadline (``timeout_s`` counted from ``began``, a ``perf_counter``
    time: the first step included), in one object: no coroutine of its own around it, and it is its own
    ``Deadline`` in the watchdog (armed by ``begin`` when it is awaited: no second object held per call).

    Drives it exactly as ``await`` would: what it waits on goes up to the task, the results and
    exceptions (a cancellation by the deadline) come back down to it. The deadline's cancellation
    that nobody else asked for comes out as ``timeout_error(spec, timeout_s)``. ``loop``: the running
    loop when the caller already knows it (the call's ``ActionContext.running_loop``), else it is asked for."""

    __slots__ = ("_began", "_coro", "_loop", "_spec", "_step", "_timeout_s")

    def __init__(
        self,
        coro: CoroutineType[Any, Any, Any],
        step: Any,
        spec: ActionSpec,
        timeout_s: float,
        began: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._coro, self._step, self._spec, self._timeout_s, self._began = coro, step, spec, timeout_s, began
        self._loop = loop

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step, loop = self._coro, self._step, self._loop
        if loop is None:
            loop = asyncio.get_running_loop()
        deadline = begin(loop, loop.time() + self._timeout_s - (time.perf_counter() - self._began), self)
        try:
            while True:
                try:
                    sent = yield step
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:
                    try:
                        step = coro.throw(exc)
                    except StopIteration as done:
                        output = done.value
                        break
                else:
                    try:
                        step = coro.send(sent)
                    except StopIteration as done:
                        output = done.value
                        break
        except BaseException as exc:
            if end(loop, deadline, exc):
                raise timeout_error(self._spec, self._timeout_s) from None
            raise
        end(loop, deadline, None)
        return output


def timeout_error(spec: ActionSpec, timeout_s: float) -> ActionError:
    """The error of a handler stopped by its deadline (advice that depends on whether it has effects)."""
    if spec.read_only:
        return ActionError(
            "timeout",
            f"{spec.name} did not finish within {timeout_s:g} s and was stopped",
            retryable=True,
            hint="Try a smaller task or a larger timeout_s if the policy allows it.",
        )
    # An action with effects stopped at an arbitrary point: part of it may have happened. Only the
    # executors know their commit points (and say so themselves before this outer deadline fires);
    # here nothing is known, so the advice must not invite a blind repeat.
    return ActionError(
        "timeout",
        f"{spec.name} did not finish within {timeout_s:g} s and was stopped; it may have taken effect in part",
        retryable=False,
        hint="Check what happened (read the file, list the mail, query the API) before repeating it.",
    )
