"""Fingerprints of text, and the decoded views of outgoing text the guard compares with them.

A text is *normalised* (lower case, every run of white space one space: case changes and
re-wrapping do not hide a fragment) and cut into every window of ``WINDOW`` (12) characters; each
window becomes a keyed 64-bit fingerprint (BLAKE2b over a per-deployment key and
the window). The index stores fingerprints only: the state store never holds the text a session
read. Someone with the database *and* the key can test a guess ("was this text read?"); without
the key, not even that.

Outgoing text is compared in every view an attacker could use to disguise it, decoded here (the
reverse of the redactor, which encodes a few short secrets; private data is large, so the outgoing
text is decoded instead): percent-encoding (``%41``, ``+``), ``\\uXXXX``/``\\xXX`` escapes, hex
(either nibble alignment) and base64/base64url decoded from each of the four character offsets of a
run (the data may start at any byte of the encoded stream), nested twice (base64 of hex of ...).

Invariants: a fragment of private data of at least 12 characters that appears verbatim or in one
of these encodings (its encoded run decoding to at least 12 characters) in outgoing text shares a
fingerprint with the index; fingerprints never collide in practice (2^-64 per pair; the model does
not know the key, so it cannot craft a collision or an evasion).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import operator
import re
import urllib.parse
from collections.abc import Iterable, Iterator

__all__ = ["WINDOW", "fingerprints", "normalize", "views"]

WINDOW = 12
_SPACE = re.compile(r"\s+")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{24,}")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_URLSAFE = str.maketrans("-_", "+/")
_DIGEST = operator.methodcaller("digest")
_AS_INT = functools.partial(int.from_bytes, byteorder="little")
_MAX_DEPTH = 2


def normalize(text: str) -> str:
    """Lower case, white space runs as one space."""
    return _SPACE.sub(" ", text.lower())


def fingerprints(texts: Iterable[str], key: bytes) -> set[int]:
    """The keyed fingerprints of every ``WINDOW``-character window of the normalised ``texts``.

    The loop runs in C (``map`` over slices and ``hashlib``): the cost is one BLAKE2b block per
    character of text.
    """
    out: set[int] = set()
    hasher = functools.partial(hashlib.blake2b, digest_size=8)
    for text in texts:
        norm = normalize(text)
        n = len(norm)
        if n < WINDOW:
            continue
        windows = map(norm.__getitem__, map(slice, range(n - WINDOW + 1), range(WINDOW, n + 1)))
        out.update(map(_AS_INT, map(_DIGEST, map(hasher, map(key.__add__, map(str.encode, windows))))))
    return out


def views(text: str) -> Iterator[str]:
    """``text`` and every decoding of it worth comparing (see the module docstring), each once."""
    seen: set[str] = set()
    todo = [(text, 0)]
    while todo:
        current, depth = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        yield current
        if depth >= _MAX_DEPTH:
            continue
        for decoded in _decodings(current):
            if decoded not in seen and len(decoded) >= WINDOW:
                todo.append((decoded, depth + 1))


def _decodings(text: str) -> Iterator[str]:
    if "%" in text or "+" in text:
        unquoted = urllib.parse.unquote_plus(text)
        if unquoted != text:
            yield unquoted
    if "\\" in text:
        unescaped = _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
        if unescaped != text:
            yield unescaped
    for m in _HEX_RUN.finditer(text):
        run = m.group(0)
        for offset in (0, 1):
            part = run[offset:]
            part = part[: len(part) // 2 * 2]
            yield bytes.fromhex(part).decode("utf-8", "replace")
    for m in _B64_RUN.finditer(text):
        run = m.group(0).rstrip("=").translate(_URLSAFE)
        for offset in range(4):
            part = run[offset:]
            part = part[: len(part) // 4 * 4]
            if len(part) < 16:
                continue
            try:
                yield base64.b64decode(part, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                continue
