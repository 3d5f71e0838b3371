"""The ``email.list`` query language, parsed into IMAP search keys.

``QUERY_SYNTAX`` (shown to the model in the tool's schema) documents it: ``from:``, ``to:``, ``cc:``,
``subject:``, ``text:``, ``body:`` with a value, ``since:``/``before:`` with a date, ``seen`` /
``unseen``, bare words for text; shell-style quoting for values with spaces.

Invariants: the result is a list of (KEY, value) pairs whose keys come from a fixed set
(``_QUERY_KEYS``, ``SENTSINCE``/``SENTBEFORE``, ``SEEN``/``UNSEEN``), never from the query's text; a
value with a control character (a CRLF would start a new IMAP command) is refused; dates are
re-formatted, never passed through. An unknown filter, an empty value or an unbalanced quote is
``invalid_input`` with the syntax as the hint. The values are quoted (or sent as literals) by
``_imap.uid_search``.

Threat model: the query is the model's; it cannot inject IMAP commands or search keys.
"""

from __future__ import annotations

import shlex
import time

from ..._errors import ActionError
from ._addresses import CONTROL

__all__ = ["QUERY_SYNTAX", "search_criteria"]

QUERY_SYNTAX = (
    "Space-separated filters, all must match: from:ADDR to:ADDR cc:ADDR subject:WORDS text:WORDS (anywhere) "
    "body:WORDS since:YYYY-MM-DD before:YYYY-MM-DD (by the Date header) unseen seen; a bare word searches "
    'the text. Quote values with spaces: subject:"quarterly report". Example: from:ana@example.com unseen.'
)
_QUERY_KEYS = {"from": "FROM", "to": "TO", "cc": "CC", "subject": "SUBJECT", "text": "TEXT", "body": "BODY"}


def search_criteria(query: str | None, unread_only: bool) -> list[tuple[str, str | None]]:
    """The query as IMAP search keys: (KEY, value or None)."""
    try:
        tokens = shlex.split(query or "")
    except ValueError as exc:
        raise ActionError("invalid_input", f"query: {exc}", hint=QUERY_SYNTAX) from None
    criteria: list[tuple[str, str | None]] = []
    for token in tokens:
        if CONTROL.search(token):
            raise ActionError("invalid_input", "query values cannot contain control characters")
        key, sep, value = token.partition(":")
        lkey, low = key.lower(), token.lower()
        if low in ("unseen", "unread", "is:unread", "is:unseen"):
            criteria.append(("UNSEEN", None))
        elif low in ("seen", "read", "is:read", "is:seen"):
            criteria.append(("SEEN", None))
        elif not sep:
            criteria.append(("TEXT", token))
        elif lkey in _QUERY_KEYS:
            if not value:
                raise ActionError("invalid_input", f"{key}: needs a value", hint=QUERY_SYNTAX)
            criteria.append((_QUERY_KEYS[lkey], value))
        elif lkey in ("since", "before"):
            try:
                day = time.strptime(value, "%Y-%m-%d")
            except ValueError:
                raise ActionError("invalid_input", f"{key}: expects YYYY-MM-DD, got {value!r}") from None
            criteria.append(("SENT" + lkey.upper(), time.strftime("%d-%b-%Y", day)))
        else:
            raise ActionError(
                "invalid_input",
                f"unknown filter {key!r} in {token!r}",
                hint=QUERY_SYNTAX + " To search for text containing ':', use text:\"...\".",
            )
    if unread_only and ("UNSEEN", None) not in criteria:
        criteria.append(("UNSEEN", None))
    return criteria
