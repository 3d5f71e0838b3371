"""Where an action call's coroutine runs: decided here alone, and the loops it uses are cleaned up here.

There are three places, and ``Legs.run``/``arun`` (and every other ``Legs`` method that needs the
runtime loop) only ask the ``Dispatcher``:

* the runtime loop (``Runtime.submit``), in its own thread: every action that is not ``inline``
  (browsers, sandboxes, SMTP, MCP: their clients belong to that loop), every call once the ``Legs``
  is closed (``Runtime.submit`` then raises ``ClosedError``), and a synchronous call from a thread
  that already runs a loop (a sync tool called inside an async framework: blocking that loop on a
  private one would deadlock it);
* the caller's own running loop, for ``arun`` of an ``inline`` action (loop-agnostic handlers:
  ``files.*``, ``http.request`` with one pinned client per loop), or for any ``arun`` made from the
  runtime thread itself (an action or approver awaiting another action);
* a private loop of the calling thread, for ``run`` of an ``inline`` action from a thread that runs
  no loop.

Why inline is kept (``bench/bench_dispatch.py``, ``nox -s bench -- --only dispatch``, and
``docs/benchmarks.md``; p50 of two runs on the shared 2-core machine under load): ``files.read``
saves 180-310 us (35-49%) with ``run`` and 245-275 us (37-48%) with ``arun``; ``http.request`` saves
325 us-1.9 ms (25-70%) with ``arun``, and little with a synchronous ``run`` (16-48 us, 1.5-5%): it
keeps the private loop there only because the choice is per action (``ActionSpec.inline``) and
``files.*`` pays for it.

Invariants: a synchronous call from the runtime thread is refused (``AgentLegsError``: it would wait
for itself); a private loop runs only in the thread that made it; when that thread ends, its loop is
shut down (``shutdown_asyncgens``: the HTTP client bound to it is closed) by the next thread that
makes a private loop, or by ``close()``, so short-lived threads leave nothing behind; after
``close()`` nothing runs inline and every idle private loop is closed.

Threat model: none of its own. The model chooses no dispatch: the action's spec (from code) and the
caller's thread decide.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from ._errors import AgentLegsError
from ._runtime import Runtime

__all__ = ["Dispatcher"]

log = logging.getLogger("agent_legs")
T = TypeVar("T")


class Dispatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._closed = False
        self._thread_local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []  # every private loop not yet closed
        self._orphaned: list[asyncio.AbstractEventLoop] = []  # private loops of threads that have ended
        self._lock = threading.Lock()

    # -- where a call runs --------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], *, inline: bool = False, what: str = "Legs.run()") -> T:
        """Run ``coro`` and wait for it: on this thread's private loop when ``inline`` allows it,
        else on the runtime loop."""
        if self.runtime.in_loop_thread:
            coro.close()
            raise AgentLegsError(f"{what} cannot be called from inside an action or approver; use arun()")
        if inline and not self._closed and not _loop_running():
            return self._thread_loop().run_until_complete(coro)
        return self.runtime.submit(coro).result()

    def arun(self, coro: Coroutine[Any, Any, T], *, inline: bool = False) -> Awaitable[T]:
        """What to await for ``coro`` (the caller awaits it at once, on its running loop): ``coro``
        itself on the caller's loop when ``inline`` allows it (or the caller is the runtime loop), else
        its future on the runtime loop, which does not block the caller's. Not a coroutine of its own:
        an inline call's chain is one coroutine shorter (one object fewer per call in flight)."""
        if (inline and not self._closed) or self.runtime.in_loop_thread:
            return coro
        return asyncio.wrap_future(self.runtime.submit(coro))

    # -- the private loops --------------------------------------------------------------------------
    @property
    def thread_loop(self) -> asyncio.AbstractEventLoop | None:
        """The calling thread's private loop, if it has one."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._thread_local, "loop", None)
        return loop

    @property
    def private_loops(self) -> list[asyncio.AbstractEventLoop]:
        """The private loops not yet closed (of live threads, and of ended ones not yet shut down)."""
        with self._lock:
            return list(self._loops)

    def _thread_loop(self) -> asyncio.AbstractEventLoop:
        loop = self.thread_loop
        if loop is None:
            self._shut_down_orphaned_loops()
            loop = asyncio.new_event_loop()
            token = _ThreadToken()  # dropped with this thread's locals when the thread ends
            weakref.finalize(token, self._orphaned.append, loop)
            self._thread_local.token = token
            self._thread_local.loop = loop
            with self._lock:
                self._loops.append(loop)
        return loop

    def _shut_down_orphaned_loops(self) -> None:
        """Shut down the private loops of threads that have ended (this thread runs no loop)."""
        while self._orphaned:
            try:
                loop = self._orphaned.pop()
            except IndexError:  # another thread took the last one
                return
            with self._lock:
                if loop not in self._loops:
                    continue  # close() has it
                self._loops.remove(loop)
            if loop.is_closed() or loop.is_running():
                continue
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())  # closes the loop's HTTP client
            except Exception:
                log.exception("shutting down the private loop of an ended thread failed")
            finally:
                loop.close()

    # -- lifetime -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop inline execution, close the runtime (its services close the clients of the private
        loops), then close every idle private loop. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.runtime.close()
        with self._lock:
            for loop in self._loops:
                if not loop.is_running():
                    loop.close()
            self._loops.clear()


class _ThreadToken:
    """Lives in a thread's locals: its finalizer tells that the thread has ended."""


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
