"""Playwright's selector engine installed in a new document while it loads: what the next click needs.

Playwright's click (and every selector-based call) first needs its injected script in the document's
utility world. A document a click led to was then only read in the page's own world (``_page``), so the
*next* click paid the install before it could act, on the critical path: measured in one process against
raw Playwright (benchmarks.md, browser notes, round 6), our click to its navigation 25-35 ms longer than
raw's (raw pays the install in its ``inner_text``, after ``load``). Started at the commit, beside the wait
for ``load``, the install overlaps the page's own loading instead.

Invariants:

* ``start`` only reads: it counts the document's root element through a locator (``queryCount``, which
  installs the engine in Playwright's isolated utility world, out of the page's scripts' reach). It
  clicks, types and navigates nothing, and its answer is not used: a page cannot change what an action
  returns through it.
* It never outlives the call that started it: ``stop`` cancels it if it is still pending (its late answer
  is then dropped by Playwright's client) and retrieves its error if it failed (a document replaced
  while it ran, a closed tab): neither is the action's concern.
* One protocol message per navigating click, none for a click that stays on its document (the engine is
  there already: the click itself used it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["start", "stop"]


def _drop(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed warm-up is nobody's error


def start(page: Any) -> asyncio.Future[Any]:
    """Install Playwright's selector engine in ``page``'s current document, in the background."""
    task: asyncio.Future[Any] = asyncio.ensure_future(page.locator("html").count())
    task.add_done_callback(_drop)
    return task


def stop(task: asyncio.Future[Any] | None) -> None:
    """The warm-up ends with the call: cancelled when still pending (nothing waits for it)."""
    if task is not None and not task.done():
        with contextlib.suppress(Exception):
            task.cancel()
