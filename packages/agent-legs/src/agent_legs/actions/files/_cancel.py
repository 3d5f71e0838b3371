"""Stopping a tree operation that runs in a worker thread: a cancel flag with a commit point.

Invariant: a worker checks the flag between entries and calls ``commit()`` right before its one visible
step (the final rename). Once committed it completes whatever the deadline does, and the waiting side
learns that (``cancel()`` returns True), so a stopped call is never reported as "stopped, retry" when its
effect took place behind its back.
"""

from __future__ import annotations

import threading

from ..._errors import ActionError

__all__ = ["Cancel", "cancelled", "commit"]


def cancelled(cancel: threading.Event | None) -> None:
    """Raise ``timeout`` (retryable) if the flag is set; a no-op without a flag."""
    if cancel is not None and cancel.is_set():
        raise ActionError("timeout", "the operation was stopped", retryable=True)


class Cancel(threading.Event):
    """A cancel flag with a commit point, for a tree operation run in a worker thread.

    The worker calls ``commit()`` right before its one visible step (the final rename); the
    waiting side calls ``cancel()`` when its deadline passes, which says whether the commit had
    already happened. So a stopped call knows whether its effect may have taken place, and never
    calls "stopped, retry" an operation that completed behind its back."""

    def __init__(self) -> None:
        super().__init__()
        self._commit_lock = threading.Lock()
        self.committed = False

    def commit(self) -> None:
        with self._commit_lock:
            cancelled(self)
            self.committed = True

    def cancel(self) -> bool:
        """Stop the worker; True if it had already committed (its effect may be in place)."""
        with self._commit_lock:
            self.set()
            return self.committed


def commit(cancel: threading.Event | None) -> None:
    """The commit point of a worker: a ``Cancel`` records it; a plain event is only checked."""
    if isinstance(cancel, Cancel):
        cancel.commit()
    else:
        cancelled(cancel)
