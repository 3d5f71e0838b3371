"""How a page the egress guard blocked is recognised, left and reported.

The session's proxy answers a blocked plain-HTTP request with a 403 page carrying ``DENIED_HEADER``
(the rule) and refuses a blocked HTTPS tunnel, which Chromium shows as a ``chrome-error:`` page. Either
way the proxy records a ``Denial`` (URL and rule) for the session.

Invariants:

* A navigation the model asked for that ends blocked (its response, redirects included, or the page
  it shows) is ``denied`` with the rule, and the tab is taken back (the previous page, else
  about:blank): the model never reads a block page as if it were content.
* A page that navigated *itself* (a timer, a refresh, a script) to a blocked URL is left the same way
  before the next call uses it, and the event is reported in that call's result; it is not an error
  of the call.

Threat model: a hostile page loops through blocked URLs to confuse the model or hide where it tried
to send data: every such attempt is reported with its rule, and the page never stays on a block page.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..._egress_proxy import DENIED_HEADER, Denial
from ..._errors import ActionError
from ._session import BrowserSession

__all__ = ["blocked_navigation", "denial_for", "deny_if_blocked", "leave_blocked_page", "leave_if_blocked"]


def denial_for(s: BrowserSession, url: str) -> Denial | None:
    """The proxy's denial behind a page now showing ``url`` (the 403 page, or Chromium's tunnel error page)."""
    denied = [*s.recent_denials, *s.proxy.denied]
    for d in reversed(denied):
        if d.url == url:
            return d
    if url.startswith("chrome-error:"):  # Chromium's page for a refused CONNECT: a tunnel denial
        for d in reversed(denied):
            if d.url.startswith("https://") and d.url.count("/") == 2:
                return d
    return None


def blocked_navigation(url: str, rule: str) -> ActionError:
    """The ``denied`` error of a navigation the egress policy blocked."""
    return ActionError(
        "denied",
        f"navigation to {url} was blocked by the egress policy",
        rule=rule,
        hint="Only hosts in policy.network.allow_hosts can be opened.",
    )


async def leave_blocked_page(s: BrowserSession) -> str:
    """Take the tab back from a blocked page (the previous page, else about:blank); the URL it is at now."""
    with contextlib.suppress(Exception):  # back to where we were, else a blank tab
        if await s.page.go_back(wait_until="load", timeout=5000) is None:
            await s.page.goto("about:blank")
    if denial_for(s, s.page.url) is not None or s.page.url.startswith("chrome-error:"):
        with contextlib.suppress(Exception):
            await s.page.goto("about:blank")  # e.g. a refresh that leads back to the blocked URL at once
    s.md_cache = None
    return str(s.page.url)


async def leave_if_blocked(s: BrowserSession) -> None:
    """A page that a script or refresh took to a blocked URL is left; the event is reported."""
    denial = denial_for(s, s.page.url)
    if denial is not None:
        now = await leave_blocked_page(s)
        s.events.append(
            f"the page tried to navigate to {denial.url} by itself, blocked by the egress policy "
            f"(rule: {denial.rule}); the tab is back at {now}"
        )


async def deny_if_blocked(s: BrowserSession, response: Any = None, by_page: bool = True) -> None:
    """A navigation that ended on the proxy's block page (or Chromium's tunnel error) is ``denied``.

    ``by_page=False`` judges only the navigation's own response (its redirects included); where a script
    sends the page afterwards is reported as an event by ``_page.page_result``.
    """
    rule = response.headers.get(DENIED_HEADER.lower()) if response is not None else None
    denial = denial_for(s, s.page.url) if by_page or rule is not None else None
    if rule is None and denial is None:
        return
    url = denial.url if denial is not None else s.page.url
    rule = rule or (denial.rule if denial is not None else "egress guard")
    await leave_blocked_page(s)
    raise blocked_navigation(url, rule)
