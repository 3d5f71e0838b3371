"""One session's browser state: its context and tab, its egress proxy, what happened since the last call,
and its profile (cookies and storage) on disk.

Invariants:

* A session has exactly one context, one proxy and one current tab (``page``); popups are collected in
  ``popups`` until the next call adopts or closes them.
* ``events``, ``saved`` and the proxy's denials accumulate between calls and are reported (then
  cleared) by the next result: nothing a page did on its own goes unreported.
* ``recent_denials`` remembers the last 200 denials, so a page that later lands on a blocked URL is
  still recognised as blocked (``_blocked``).
* A profile is written atomically and owner-only (the file ``0o600``, its directory created ``0o700``):
  a crash keeps the previous file; other local users never read the cookies. Profile names are sanitised (no path
  separators, no leading dots): a session name cannot choose where the file goes.

Threat model: a session's state is never shared with another session (contexts are separate; a
profile is shared only when ``settings.browser.profile`` names the same profile for both).
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._egress_proxy import Denial, EgressProxy
from ..._models import Artifact

if TYPE_CHECKING:
    from ._page import LastRead
    from ._pool import PlaywrightServer
    from ._service import BrowserService

__all__ = ["BrowserSession", "atomic_write", "count_commit", "note_popup", "profile_name"]


@dataclass(eq=False)
class BrowserSession:
    name: str
    service: BrowserService
    context: Any
    page: Any
    proxy: EgressProxy
    profile: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    events: list[str] = field(default_factory=list)
    popups: list[Any] = field(default_factory=list)
    downloads: list[asyncio.Future[None]] = field(default_factory=list)
    saved: list[Artifact] = field(default_factory=list)
    refused: set[Any] = field(default_factory=set)  # downloads cancelled for being too large
    md_cache: tuple[str, str, str] | None = None  # (base, html, markdown) of the last conversion
    last_read: LastRead | None = None  # the last read of the tab (``_page``: reused while unchanged)
    warming: asyncio.Future[Any] | None = None  # the next click's selector engine, being installed (``_warm``)
    cdp: tuple[Any, Any] | None = None  # (tab, its CDP session): where our reads evaluate (``_main_world``)
    opening: bool = False
    commits: int = 0  # main-frame navigations committed (how a click knows the page it started has arrived)
    # Set when the tab commits a navigation, starts a download or opens a popup: what a click waits on.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    recent_denials: collections.deque[Denial] = field(default_factory=lambda: collections.deque(maxlen=200))
    saved_state: str | None = None  # the profile's last written storage state (skip identical writes)
    server: PlaywrightServer | None = None  # its server of settings.browser.ws_endpoints (None: our one browser)
    gone: bool = False  # its server died: the session is lost (its next call is told, then it opens elsewhere)


def count_commit(s: BrowserSession, frame: Any) -> None:
    """``framenavigated`` handler: count the main frame's committed navigations."""
    if frame.parent_frame is None:
        s.commits += 1
        s.changed.set()


def note_popup(s: BrowserSession, page: Any) -> None:
    """The context's ``page`` handler: a tab the page opened (not one we open) waits for the next call."""
    if not s.opening:
        s.popups.append(page)
        s.changed.set()


def profile_name(template: str, session: str) -> str:
    """``settings.browser.profile``; ``{session}`` in it gives each session its own profile."""
    name = template.replace("{session}", session)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")[:80] or "default"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (owner only), all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # cookies: owner only
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
