"""The runtime's session table: when each session was last used, and when this worker last told the
session registry (``StateStore.register_session``) that it holds the session.

Callers touch sessions from their own threads (a synchronous ``run`` of an inline action, or an
``arun`` on the caller's loop) while the idle reaper reads the table on the runtime loop, and
``close_session`` removes entries there. Every read and write goes through one lock, so:

* the reaper never iterates a dict another thread is growing ("dictionary changed size during
  iteration" killed the reaper before, and with it every later expiry);
* a session is removed as idle only if it is still idle at that moment (``take_if_idle`` checks
  and removes under the lock): a call that touched it after the reaper's scan keeps it alive;
* "register now?" is decided once per beat (``due_for_registration`` checks and sets under the
  lock): two threads touching a new session together do not both register it.

The lock is never held across an ``await`` or any I/O. A call's own path (``touch_due``: ``touch`` and
``due_for_registration`` at one time, under one acquisition) takes it with ``acquire``/``release``, not
``with``: a ``with`` statement allocates the lock's bound ``__exit__`` (a garbage-collected object) on
every call. Threat model: session names come from the caller (for an adapter, often from the
conversation); they are only keys here.
"""

from __future__ import annotations

import threading

__all__ = ["SessionTable"]


class SessionTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}  # session -> loop time of its last call
        self._registered: dict[str, float] = {}  # session -> monotonic time this worker last registered it

    def touch(self, session: str, now: float) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self._last_used[session] = now
        finally:
            lock.release()

    def touch_due(self, session: str, now: float, beat_s: float) -> bool:
        """``touch`` and ``due_for_registration`` at one time ``now`` (the loop's clock, which is the
        monotonic one), under one acquisition of the lock: what a call does."""
        lock = self._lock
        lock.acquire()
        try:
            self._last_used[session] = now
            return self._claim_beat(session, now, beat_s)
        finally:
            lock.release()

    def __contains__(self, session: object) -> bool:
        with self._lock:
            return session in self._last_used

    def __len__(self) -> int:
        with self._lock:
            return len(self._last_used)

    def idle(self, cutoff: float) -> list[str]:
        """The sessions last used before ``cutoff`` (a snapshot: the table may change right after)."""
        with self._lock:
            return [s for s, last in self._last_used.items() if last < cutoff]

    def take_if_idle(self, session: str, cutoff: float) -> bool:
        """Remove ``session`` if it is still idle since before ``cutoff``; whether it was removed."""
        with self._lock:
            last = self._last_used.get(session)
            if last is None or last >= cutoff:
                return False
            del self._last_used[session]
            return True

    def forget(self, session: str) -> None:
        with self._lock:
            self._last_used.pop(session, None)

    # -- the session registry's beat -------------------------------------------------------------
    def due_for_registration(self, session: str, now: float, beat_s: float) -> bool:
        """Whether this worker should tell the registry about ``session`` now; if so, noted as done."""
        lock = self._lock
        lock.acquire()
        try:
            return self._claim_beat(session, now, beat_s)
        finally:
            lock.release()

    def _claim_beat(self, session: str, now: float, beat_s: float) -> bool:
        """(Under the lock.) Whether ``session``'s registration is due at ``now``; if so, claimed."""
        last = self._registered.get(session)
        if last is not None and now - last <= beat_s:
            return False
        self._registered[session] = now
        return True

    def unregister(self, session: str) -> bool:
        """Forget that ``session`` was registered (to try again, or once released); whether it was."""
        with self._lock:
            return self._registered.pop(session, None) is not None

    def take_registrations(self) -> bool:
        """Forget every registration (the worker releases them all at once); whether there were any."""
        with self._lock:
            had = bool(self._registered)
            self._registered.clear()
            return had
