"""Removing sandbox containers off the caller's path: in the background after ``Legs.close()``, and
waited for before the process exits.

``Legs.close()`` kills every kernel before it returns (its attach connection is hung up: the
driver's PID 1 ends the container at once, whatever the code was doing) and hands the removal of
the containers (``docker rm -f``, tens to hundreds of milliseconds each) to this module's worker
threads (``submit``), so that closing does not wait for the engine.

Invariants:

* **Nothing of this process's survives its exit.** Every container this process creates is
  recorded (``track``, as soon as the engine made it) until it is removed (``untrack``). The worker
  threads are joined by the interpreter before it runs its exit hooks (so every queued removal has
  run), and ``agent_legs._legs``'s exit hook then calls ``drain(sweep=True)``: it waits for any
  removal still running and removes whatever is still recorded (a container whose creation finished after its
  service closed, or of a ``Legs`` dropped without ``close``). A removal submitted while the
  interpreter shuts down runs inline.
* **Bounded.** Each removal is one engine call with the client's timeout (``DOCKER_TIMEOUT_S``); a
  removal that fails is logged and the container is left to ``remove_orphans`` of the next start on
  this host (its owner's pid is dead by then).

Threat model: nothing here reads what a sandbox wrote; the ids come from the engine's replies to our
own ``create`` calls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["drain", "owned", "remove", "submit", "track", "untrack"]

log = logging.getLogger("agent_legs.code")

_lock = threading.Lock()
_owned: dict[str, Any] = {}  # container id -> the docker Container object (its client removes it)
_pending: set[concurrent.futures.Future[None]] = set()
_failed: set[str] = set()  # ids whose removal failed (still recorded as ours)
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def track(container: Any) -> None:
    """``container`` exists on an engine and belongs to this process until ``untrack``."""
    with _lock:
        _owned[container.id] = container


def untrack(container_id: str) -> None:
    with _lock:
        _owned.pop(container_id, None)
        _failed.discard(container_id)


def owned() -> list[str]:
    """Ids of the containers this process made and has not removed yet."""
    with _lock:
        return list(_owned)


def remove(container: Any) -> None:
    """``docker rm -f`` (blocking); a container already gone counts as removed."""
    try:
        container.remove(force=True)
    except Exception as exc:
        # NotFound: gone already; Conflict "removal ... already in progress": another removal has it
        if type(exc).__name__ != "NotFound" and "already in progress" not in str(exc):
            log.warning("removing sandbox container %s failed: %s", getattr(container, "short_id", "?"), exc)
            with _lock:
                _failed.add(container.id)
            return
    untrack(container.id)


def _run(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:
        log.exception("removing sandbox containers in the background failed")


def submit(work: Callable[[], None]) -> None:
    """Run ``work`` (blocking engine calls) on a worker thread; inline when the interpreter is
    shutting down (no thread can start then)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="agent-legs-remove")
        executor = _executor
    try:
        future = executor.submit(_run, work)
    except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
        _run(work)
        return
    with _lock:
        _pending.add(future)
    future.add_done_callback(_done)


def _done(future: concurrent.futures.Future[None]) -> None:
    with _lock:
        _pending.discard(future)


def drain(timeout_s: float = 60.0, *, sweep: bool = False) -> list[str]:
    """Wait for the background removals; the ids whose removal failed. ``sweep`` (the exit hook):
    then remove every container still recorded as this process's, the kernels of a ``Legs`` still
    open included, and return those that could not be removed."""
    with _lock:
        pending = list(_pending)
    if pending:
        concurrent.futures.wait(pending, timeout=timeout_s)
    if not sweep:
        with _lock:
            return sorted(_failed & set(_owned))
    with _lock:
        left = list(_owned.values())
    for container in left:
        with contextlib.suppress(Exception):
            remove(container)
    return owned()
