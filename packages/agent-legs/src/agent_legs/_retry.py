"""The one retry primitive: try again on a transient failure, only while the deadline leaves room.

Built on tenacity (``AsyncRetrying``): every family that retries (SMTP's transient failures, a page
evaluation whose context a navigation destroyed, a ``goto`` interrupted by the old page's own
navigation) writes ``async for attempt in retrying(...): with attempt: ...`` and nothing else.

Invariants:

* A retry never outlives the call's deadline: before each new attempt the wait *and*
  ``min_attempt_s`` (the least time an attempt needs to be worth starting) must fit before
  ``deadline`` (``time.monotonic()``), else the last failure is raised as it was.
* Only what ``retry_on`` accepts is retried; anything else (and ``CancelledError``: a deadline or a
  close) propagates at once, unchanged (``reraise``: callers see their own exception types, never a
  tenacity wrapper).
* ``attempts`` bounds the tries whatever the time left; ``attempt.retry_state.attempt_number``
  (1-based) tells an attempt which one it is (for span attributes such as ``*.attempt``).

Threat model: none of its own; a compromised model cannot make a call retry longer than its
deadline or more often than ``attempts``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

__all__ = ["retrying"]


def retrying(
    *,
    attempts: int,
    retry_on: Callable[[BaseException], bool],
    waits: Sequence[float] = (),
    deadline: float | None = None,
    min_attempt_s: float = 0.0,
) -> AsyncRetrying:
    """Attempts of one operation: ``async for attempt in retrying(...): with attempt: ...``.

    ``waits[i]`` is the pause before attempt ``i + 2`` (the last value repeats; none: no pause).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    pauses = tuple(float(w) for w in waits)

    def wait(state: RetryCallState) -> float:
        if not pauses:
            return 0.0
        return pauses[min(state.attempt_number, len(pauses)) - 1]

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= attempts:
            return True
        return deadline is not None and time.monotonic() + wait(state) + min_attempt_s >= deadline

    return AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception(retry_on), reraise=True)
