"""Our reads' evaluation in the page's own (main) world, over the tab's own CDP session.

Playwright's ``page.evaluate`` first installs its utility script (argument and result serialisation) in each new
document's main world: ~6 ms of renderer time on the first evaluation of every document (the bench's 50 KB page,
quiet: a first read 21.7 ms through ``page.evaluate``, 15.8 ms through ``Runtime.evaluate``; benchmarks.md,
browser notes, round 10). Our reads need none of it: they pass a few JSON values and get a JSON value back. So
they go to Chromium as one ``Runtime.evaluate`` (``returnByValue``) on a CDP session of the tab
(``BrowserContext.new_cdp_session``, made on the tab's first read and kept on the session with its tab).

Invariants:

* The arguments are JSON literals (``json.dumps`` escapes every non-ASCII character, U+2028/U+2029 included):
  a selector the model chose is data in the expression, never code.
* The evaluation runs in the main frame's current document, whichever it is when the renderer gets to it (a
  ``page.evaluate`` is bound to the document it was sent to and fails if that one is gone). What depends on the
  document checks the browser's commit count after the answer (``_page``): the browser reports a commit before
  anything runs in the new document, and that event reaches us before the answer of an evaluation that ran there.
* A script error in the page is an exception (``PageScriptError``) with the page's message, as ``page.evaluate``
  raises one; a document being replaced under the evaluation is recognised by ``navigated_away``.

Threat model: as for any main-world read (``_page``): the page's scripts can see and rewrite what runs there, so
nothing that runs here may decide anything beyond what the page shows.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from ._session import BrowserSession

__all__ = ["DOCUMENT_REPLACED", "PageScriptError", "evaluate", "navigated_away"]

# What Chromium (or Playwright) answers when the document an evaluation was sent to went away under it.
DOCUMENT_REPLACED = ("Execution context was destroyed", "Cannot find default execution context", "Inspected target navigated")


class PageScriptError(Exception):
    """A script error thrown while our read ran in the page (the page's message)."""


def navigated_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the document was replaced while we evaluated in it (a read to do again)."""
    if not isinstance(exc, Exception):
        return False
    text = str(exc)
    return any(marker in text for marker in DOCUMENT_REPLACED)


async def evaluate(s: BrowserSession, function: str, *args: Any) -> Any:
    """``function`` (JavaScript source of a function) called with ``args`` in the tab's main world; its JSON value."""
    page = s.page
    held = s.cdp
    if held is None or held[0] is not page:
        old = held
        held = s.cdp = (page, await page.context.new_cdp_session(page))
        if old is not None:  # the session's tab changed: the old tab's CDP session goes (closed tab: already gone)
            with contextlib.suppress(Exception):
                await old[1].detach()
    expression = f"({function})({','.join(map(json.dumps, args))})"
    reply = await held[1].send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "silent": True})
    details = reply.get("exceptionDetails")
    if details is not None:
        thrown = details.get("exception") or {}
        raise PageScriptError(f"Error: {thrown.get('description') or details.get('text') or 'the read threw'}")
    return reply["result"].get("value")
