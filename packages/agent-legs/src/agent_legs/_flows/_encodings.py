"""Fingerprints of text, and the decoded views of outgoing text the guard compares with them.

A text is *normalised* (lower case, every run of white space one space: case changes and
re-wrapping do not hide a fragment) and cut into every window of ``WINDOW`` (12) characters; each
window becomes a keyed 64-bit fingerprint. The index stores fingerprints only: the state store never
holds the text a session read.

The fingerprint (state store schema v5; before it, one BLAKE2b per window at about a microsecond per
character) is two keyed *vector multiply-shift* hashes of the window's 12 code points ``x_0..x_11``
(each below ``2**21``), one for each 32-bit half::

    h(x) = ((b + a_0 * x_0 + ... + a_11 * x_11) mod 2**64) >> 32

with ``a_i`` and ``b`` 64-bit words drawn from the deployment's key (SHAKE-256 of the key, so every
worker derives the same 26 words). Computed for every window of a text at once, in C: with NumPy's
wrapping 64-bit vectors (24 multiply-adds per character: tens of nanoseconds per character), or, for
a short text while NumPy is not loaded, by one multiplication of big integers per half (so a process
whose private reads are short never imports NumPy; the first longer one imports it, once).

Why collisions stay out of reach (the argument, Dietzfelbinger 1996; Thorup, "High Speed Hashing for
Integers and Strings", 2015): for keys drawn uniformly, vector multiply-shift from ``w``-bit words to
``l`` bits is strongly universal when ``w >= l + u - 1`` for ``u``-bit inputs; here ``w = 64``,
``l = 32``, ``u = 21``. So two different windows get the same 32-bit half with probability
``2**-32``, and, the two halves' keys being independent, the same fingerprint with probability
``2**-64``: the bound a random 64-bit function (the former BLAKE2b truncation) gives. A false match
costs an approval request, never a leak: a window's fingerprint is a function of the window, so the
same private fragment always matches (no evasion through the hash). The model never sees a key or a
fingerprint, so it cannot choose texts to collide.

What the fingerprints do not hide: the key is in the same database (``flow_key``), so whoever holds
the database can test a guess ("was this text read?") and, from one known window, find the next
character by trying each one, as with the former BLAKE2b. Keep the state store as private as the
data the sessions read.

Outgoing text is compared in every view an attacker could use to disguise it, decoded here (the
reverse of the redactor, which encodes a few short secrets; private data is large, so the outgoing
text is decoded instead): percent-encoding (``%41``, ``+``), ``\\uXXXX``/``\\xXX`` escapes, hex
(either nibble alignment) and base64/base64url decoded from each of the four character offsets of a
run (the data may start at any byte of the encoded stream), nested twice (base64 of hex of ...).

Invariants: a fragment of private data of at least 12 characters that appears verbatim or in one
of these encodings (its encoded run decoding to at least 12 characters) in outgoing text shares a
fingerprint with the index; two different windows share one with probability ``2**-64`` (above).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import sys
import urllib.parse
from array import array
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["WINDOW", "fingerprints", "normalize", "sorted_fingerprints", "views", "window_hashes"]

WINDOW = 12
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{24,}")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_URLSAFE = str.maketrans("-_", "+/")
_MAX_DEPTH = 2
_NUMPY_FROM = 512  # characters: a shorter text is hashed with Python's integers while NumPy is not loaded


def normalize(text: str) -> str:
    """Lower case, white space runs as one space (``str.split`` and ``\\s`` know the same white space;
    the same text as ``re.sub(r"\\s+", " ", text.lower())``, about six times faster)."""
    low = text.lower()
    parts = low.split()
    if not parts:
        return " " if low else ""
    out = " ".join(parts)
    if low[0].isspace():
        out = " " + out
    if low[-1].isspace():
        out += " "
    return out


def fingerprints(texts: Iterable[str], key: bytes) -> set[int]:
    """The keyed fingerprints of every ``WINDOW``-character window of the normalised ``texts``."""
    out: set[int] = set()
    for text in texts:
        hashes = window_hashes(normalize(text), key)
        if hashes is not None:
            out.update(hashes.tolist())
    return out


def sorted_fingerprints(text: str, key: bytes) -> bytes:
    """``text``'s distinct fingerprints, sorted, as little-endian 64-bit words (``_index.encode_fps``'s
    layout, made without a Python integer per window on the NumPy path)."""
    hashes = window_hashes(normalize(text), key)
    if hashes is None:
        return b""
    if isinstance(hashes, array):
        words = array("Q", sorted(set(hashes)))
        if sys.byteorder == "big":
            words.byteswap()
        return words.tobytes()
    import numpy as np

    hashes.sort()  # then the distinct ones (np.unique is several times slower on 64-bit words)
    distinct = hashes[np.concatenate(([True], hashes[1:] != hashes[:-1]))]
    return distinct.astype("<u8", copy=False).tobytes()


def window_hashes(norm: str, key: bytes) -> NDArray[np.uint64] | array[int] | None:
    """The fingerprint of each window of the normalised text ``norm``, in order (``None``: no window).

    Two implementations of the one function (``test_flows_fingerprints`` holds them equal): NumPy's
    vectors, and, for a text under ``_NUMPY_FROM`` characters while NumPy is not loaded yet (a process
    whose private reads are short never pays its import), Python's integers."""
    if len(norm) < WINDOW:
        return None
    if len(norm) < _NUMPY_FROM and "numpy" not in sys.modules:
        return _hashes_by_integers(norm, key)
    return _hashes_by_numpy(norm, key)


def _hashes_by_numpy(norm: str, key: bytes) -> NDArray[np.uint64]:
    import numpy as np

    m = len(norm) - WINDOW + 1
    hi_keys, hi_base, lo_keys, lo_base = (np.array(part, dtype=np.uint64) for part in _hash_keys(key))
    points = np.frombuffer(norm.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    hi = np.full(m, hi_base, dtype=np.uint64)
    lo = np.full(m, lo_base, dtype=np.uint64)
    term = np.empty(m, dtype=np.uint64)
    for i in range(WINDOW):  # the sums wrap modulo 2**64, as the scheme wants
        column = points[i : i + m]
        np.multiply(column, hi_keys[i], out=term)
        hi += term
        np.multiply(column, lo_keys[i], out=term)
        lo += term
    hi &= np.uint64(0xFFFFFFFF00000000)
    lo >>= np.uint64(32)
    hi |= lo
    return hi


def _hashes_by_integers(norm: str, key: bytes) -> array[int]:
    """The same sums by one multiplication of big integers per half: every code point in a 128-bit slot,
    times the 12 keys in reverse (slot ``s + 11`` of the product is window ``s``'s exact sum, below
    ``2**89``: no carry reaches the next slot), plus the base in every slot; the half is bits 32-63."""
    n, m = len(norm), len(norm) - WINDOW + 1
    hi_keys, hi_base, lo_keys, lo_base = _hash_keys(key)
    points = norm.encode("utf-32-le", "surrogatepass")
    slots = bytearray(16 * n)
    for i in range(3):  # code points are below 2**21: three bytes each
        slots[i::16] = points[i::4]
    value = int.from_bytes(slots, "little")
    every = int.from_bytes((b"\1" + bytes(15)) * n, "little")  # 1 in each slot
    words = bytearray(8 * m)
    for keys, base, half in ((lo_keys, lo_base, 0), (hi_keys, hi_base, 4)):
        kernel = sum(k << (128 * (WINDOW - 1 - i)) for i, k in enumerate(keys))
        sums = (value * kernel + base * every).to_bytes(16 * (n + WINDOW), "little")
        first = 16 * (WINDOW - 1) + 4
        for i in range(4):
            words[half + i :: 8] = sums[first + i : 16 * n : 16][:m]
    out = array("Q", bytes(words))
    if sys.byteorder == "big":
        out.byteswap()
    return out


@functools.lru_cache(maxsize=8)
def _hash_keys(key: bytes) -> tuple[tuple[int, ...], int, tuple[int, ...], int]:
    """The 2 x (12 + 1) 64-bit words of the two multiply-shift hashes, drawn from the deployment's key."""
    stream = hashlib.shake_256(b"agent-legs flows v5\0" + key).digest(8 * 2 * (WINDOW + 1))
    words = [int.from_bytes(stream[i : i + 8], "little") for i in range(0, len(stream), 8)]
    return tuple(words[:WINDOW]), words[WINDOW], tuple(words[WINDOW + 1 : 2 * WINDOW + 1]), words[2 * WINDOW + 1]


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
