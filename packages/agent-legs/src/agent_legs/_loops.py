"""One resource per event loop, closed with its loop: the holder behind per-loop clients.

Inline actions run on the caller's own event loop, and a loop-bound resource (a connection pool)
can be used and closed only on the loop that made it. ``PerLoop`` keeps one per loop for a service.

Invariants:

* **One per loop, made on first use.** ``get()`` returns the running loop's resource, creating it
  there on the first call; between the lookup and the store nothing suspends, so two tasks of one
  loop never both create one. ``current(loop)`` is the synchronous lookup alone (no coroutine, no
  ``asyncio.get_running_loop()``, which costs a ``getpid()`` syscall per call in CPython 3.11): its
  caller passes the running loop it already has, and falls back to ``get()`` on ``None``.
* **Closed when its loop shuts down.** For every loop but the home loop (the runtime's, whose
  resource ``aclose()`` closes), an async generator is started on that loop and left suspended for
  the loop's lifetime: ``loop.shutdown_asyncgens()`` (which ``asyncio.run`` and ``Legs``' private
  loops run) executes its ``finally``, which forgets the entry and closes the resource on that loop.
  The holder keeps a strong reference to the generator (the loop only holds a weak one).
* **Closed loops are dropped.** A loop closed without shutting down its async generators never runs
  the hook: its resource is released synchronously (``abandon``: nothing can run on a closed loop)
  when the next loop gets its resource, or at ``aclose()``; never kept until then silently.
* **``aclose()`` closes all and never blocks a loop.** On the calling loop the resource is closed
  directly; on another running loop the close is scheduled there without waiting (that loop may be
  blocked inside the very ``Legs.close()`` that called us); on an idle loop (the private loop of sync
  calls, between calls) it is driven from a helper thread, waited for at most 5 s. After ``aclose()``
  ``get()`` raises ``unavailable``. Failures to close are logged, never raised.
* **Thread-safe:** loops live in several threads; the map is guarded by a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._errors import ActionError

__all__ = ["PerLoop"]

log = logging.getLogger("agent_legs")

R = TypeVar("R")
_IDLE_CLOSE_WAIT_S = 5.0


@dataclass(slots=True)
class _Entry(Generic[R]):
    resource: R
    closer: AsyncGenerator[None, None] | None  # closes the resource when its loop shuts down


class PerLoop(Generic[R]):
    """Resources by event loop (see the module for the invariants).

    ``create()`` makes one (on the loop that will use it); ``close(resource)`` closes it on that loop;
    ``abandon(resource)`` releases what can be released once that loop is closed; ``home`` is the loop
    whose resource only ``aclose()`` closes (no shutdown hook); ``what`` names it in log messages."""

    def __init__(
        self,
        create: Callable[[], R],
        close: Callable[[R], Awaitable[None]],
        abandon: Callable[[R], None],
        *,
        home: asyncio.AbstractEventLoop | None,
        what: str = "a per-loop resource",
    ) -> None:
        self._create = create
        self._close = close
        self._abandon_fn = abandon
        self._home = home
        self._what = what
        self._entries: dict[asyncio.AbstractEventLoop, _Entry[R]] = {}
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task[Any]] = set()
        self._closed = False

    def loops(self) -> dict[asyncio.AbstractEventLoop, R]:
        """A snapshot: loop -> its resource."""
        with self._lock:
            return {loop: entry.resource for loop, entry in self._entries.items()}

    def current(self, loop: asyncio.AbstractEventLoop) -> R | None:
        """The resource of ``loop`` (which must be the running loop) if it has one yet, else ``None``."""
        entry = self._entries.get(loop)
        return entry.resource if entry is not None else None

    async def get(self, loop: asyncio.AbstractEventLoop | None = None) -> R:
        """The running loop's resource (created on first use there); ``loop``: the running loop, when
        the caller already has it."""
        if loop is None:
            loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None:
            return entry.resource
        if self._closed:
            raise ActionError("unavailable", "Agent Legs is shutting down")
        self._drop_closed_loops()
        resource = self._create()
        closer = None
        if loop is not self._home:  # the home loop's resource is closed by aclose()
            closer = self._close_at_loop_shutdown(loop, resource)
            await closer.__anext__()  # registers with the loop's async-generator shutdown hook (no suspension)
        with self._lock:
            self._entries[loop] = _Entry(resource, closer)
        return resource

    async def _close_at_loop_shutdown(self, loop: asyncio.AbstractEventLoop, resource: R) -> AsyncGenerator[None, None]:
        """Suspended for the loop's lifetime; ``loop.shutdown_asyncgens()`` runs the ``finally``."""
        try:
            yield
        finally:
            with self._lock:
                self._entries.pop(loop, None)
            await self._close(resource)

    def _drop_closed_loops(self) -> None:
        """Resources of loops closed without shutting down (so their hook never ran): nothing can
        close them there any more; release them now rather than at ``aclose()``."""
        with self._lock:
            gone = [(loop, e) for loop, e in self._entries.items() if loop.is_closed()]
            for loop, _ in gone:
                del self._entries[loop]
        for _, entry in gone:
            self._abandon(entry)

    def _abandon(self, entry: _Entry[R]) -> None:
        try:
            self._abandon_fn(entry.resource)
        except Exception:
            log.debug("releasing %s of a closed loop failed", self._what, exc_info=True)

    async def aclose(self) -> None:
        """Close every resource (see the module: never waits on another running loop). Never raises."""
        self._closed = True
        with self._lock:
            entries = list(self._entries.items())
            self._entries.clear()
        for loop, entry in entries:
            try:
                if entry.closer is None or loop is asyncio.get_running_loop():
                    await self._close(entry.resource)
                elif loop.is_closed():
                    self._abandon(entry)  # closed without shutting down async generators: nothing can run there
                elif loop.is_running():
                    # Do not wait: that loop may be blocked in the very Legs.close() that called us.
                    loop.call_soon_threadsafe(self._spawn_close, entry)
                else:  # e.g. the private loop of sync run() calls, idle between calls
                    await self._close_on_idle_loop_in_thread(loop, entry)
            except Exception:
                log.exception("closing %s failed", self._what)

    def _spawn_close(self, entry: _Entry[R]) -> None:
        assert entry.closer is not None
        task = asyncio.get_running_loop().create_task(entry.closer.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_on_idle_loop_in_thread(self, loop: asyncio.AbstractEventLoop, entry: _Entry[R]) -> None:
        # An idle loop can only be driven from a thread running no loop; not the default executor,
        # which is already shut down when an atexit hook closes a forgotten Legs.
        mine = asyncio.get_running_loop()
        done: asyncio.Future[None] = mine.create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        def work() -> None:
            try:
                self._close_on_idle_loop(loop, entry)
            finally:
                with contextlib.suppress(RuntimeError):  # our loop already gone
                    mine.call_soon_threadsafe(finish)

        threading.Thread(target=work, name="agent-legs-loop-close", daemon=True).start()
        await asyncio.wait_for(done, _IDLE_CLOSE_WAIT_S)

    def _close_on_idle_loop(self, loop: asyncio.AbstractEventLoop, entry: _Entry[R]) -> None:
        assert entry.closer is not None
        try:
            loop.run_until_complete(entry.closer.aclose())
        except RuntimeError:  # started running meanwhile
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._spawn_close, entry)
