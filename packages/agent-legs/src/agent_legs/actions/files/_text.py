"""What a file's bytes are: UTF-8 text (or binary) and a mime type guessed from the name.

Both are pure functions of their input (no I/O): ``decode_text`` never raises on bad bytes (binary is
``None``), ``guess_mime`` never fails (unknown is ``application/octet-stream``).
"""

from __future__ import annotations

import codecs
import mimetypes

__all__ = ["decode_text", "guess_mime"]


def decode_text(data: bytes, *, complete: bool = True) -> str | None:
    """UTF-8 text, or None if the bytes look binary. ``complete=False``: the data was cut at a
    size limit, so an incomplete character at the end is dropped rather than called binary."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
    except UnicodeDecodeError:
        return None


def guess_mime(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
