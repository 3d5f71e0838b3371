"""Playwright's selector engine installed in the document a click led to, once the click's read has answered:
what the next click needs.

Playwright's click (every selector-based call) first needs its injected script in the document's utility
world, installed on first use (~25 ms quiet, ~45 ms loaded: the renderer compiles it). Our reads run in the
page's own world (``_page``), so after a navigating click the *next* click paid that install on its path,
where raw Playwright pays it in its ``inner_text`` read. Started once our read has answered, the install
overlaps the conversion of that read and the caller's next call instead (benchmarks.md, browser notes,
round 8: a few ms to ~9 ms per click + content at moderate load, nothing under heavy load; started at the
commit instead, round 6, it competed with the page's own loading).

Invariants:

* It only reads: it counts the document's root element through a locator (``queryCount``, in Playwright's
  isolated utility world, out of the page's scripts' reach). It clicks, types and navigates nothing, and its
  answer is not used: a page cannot change what any action returns through it.
* Its message leaves before the read's conversion (``_page._read`` gives it one turn of the loop), so the
  renderer installs while we convert (round 9; it used to leave once the click's result was built).
* It never delays the click's result (sent after the read, not awaited) and nobody waits for it: the session
  keeps a reference (``BrowserSession.warming``) until the next one; its error (a document replaced while it
  ran, a closed tab or context) is retrieved and dropped.
* One protocol message per navigating click, none for a click that stays on its document (the click itself
  installed the engine there).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._session import BrowserSession

__all__ = ["warm_selectors"]


def _drop(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed install is nobody's error (the next click installs it itself)


def warm_selectors(s: BrowserSession) -> None:
    """Start installing Playwright's selector engine in ``s.page``'s current document, in the background."""
    task: asyncio.Future[Any] = asyncio.ensure_future(s.page.locator("html").count())
    task.add_done_callback(_drop)
    s.warming = task
