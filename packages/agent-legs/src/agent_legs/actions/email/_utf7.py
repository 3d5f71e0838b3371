"""IMAP's modified UTF-7 (RFC 3501, 5.1.3): how folder names travel on the wire.

Invariants: ``utf7_decode(utf7_encode(name)) == name`` (``test_utf7_round_trip``, with RFC 3501's
example); printable ASCII other than ``&`` is sent as is, ``&`` as ``&-``, everything else as
``&<modified base64 of UTF-16BE>-``. A malformed encoded run from a server is left as it came, never
an exception. The encoded name is then quoted by ``_imap`` (which refuses control characters first).
"""

from __future__ import annotations

import base64
import re

__all__ = ["utf7_decode", "utf7_encode"]


def utf7_encode(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501, 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            b64 = base64.b64encode("".join(pending).encode("utf-16-be")).decode().rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def utf7_decode(name: str) -> str:
    """A folder name from IMAP's modified UTF-7; a malformed run stays as it is."""

    def sub(m: re.Match[str]) -> str:
        b64 = m.group(1)
        if not b64:
            return "&"
        b64 = b64.replace(",", "/")
        try:
            return base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be")
        except ValueError:
            return m.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", sub, name)
