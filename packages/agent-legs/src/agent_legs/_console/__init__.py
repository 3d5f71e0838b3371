"""``agent-legs console``: a local web page with the live action feed, the sessions and the approvals.

One module per concern: ``_config`` (what the console serves and how it is reached: token, host),
``_auth`` (login by token, the session cookie, the same-origin and CSRF checks, security headers),
``_data`` (the action log as the console reads it: recent calls, filters, sessions, artifacts),
``_feed`` (the live feed: one log follower, fanned out as server-sent events), ``_approvals``
(the approval queue's pending requests and the decisions), ``_app`` (the Starlette application and
its pages) and ``_server`` (uvicorn). Templates and static files (htmx, vendored) are package data.

Threat model: the page shows what agents did and decides what they may do, so it is as sensitive as
the state directory. Whoever reaches the port without the token gets 401; a logged-in browser visiting
a hostile site must not be made to approve anything (SameSite=Strict cookie, Origin and CSRF-token
checks on every POST, frame-ancestors 'none'); action arguments and results are attacker-controlled
text (a prompt-injected model chose them): they are only ever rendered autoescaped, never as markup.
Bound to loopback unless told otherwise, with the Host header checked there (DNS rebinding).

Importing this package imports neither Starlette nor uvicorn (the ``[console]`` extra).
"""

from __future__ import annotations

from ._config import ConsoleConfig, is_loopback, login_url, resolve_token

__all__ = ["ConsoleConfig", "is_loopback", "login_url", "resolve_token"]
