"""One session's index of what it read: fingerprints per reading call, in memory and in the store.

The store (``flow_index``, schema versions 3 and 5: ``_state._flowindex``) holds one row per reading call
(none for a text whose exact fingerprint set the session's index holds already: ``SessionIndex.holds``):
its label (``private``, ``untrusted``, ``saturated``, or ``unindexed``: a private read whose fingerprints
were made by the function before schema v5, judged like ``saturated``) and, for private text, the sorted set of
its window fingerprints (8 bytes each, base64). Every worker of a deployment sees the same rows; a
worker keeps a cache per session (the last ``_CACHED_SESSIONS`` sessions it checked) and reads only
the rows added since (``id > last``) before each check, so a read on another worker counts at once.

Bounded memory: a session's private fingerprints stop at ``policy.flows.max_index_chars``; past it
the session is recorded *saturated* (no more fingerprints are stored) and the guard treats every
sink of it to an untrusted destination as carrying private data (fail closed). In memory: 16 bytes
per fingerprint (one sorted array per call, one merged array; a session of at most 32768 also
keeps them as a set, about 70 bytes each, for lookups at C speed), never the text.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Entry", "SessionCache", "SessionIndex", "contains", "decode_fps", "encode_fps", "row_digest"]

_CACHED_SESSIONS = 32
_SET_LIMIT = 32_768  # up to this many fingerprints a session's merged index is also a set (C-speed lookups)


def encode_fps(fps: Iterable[int]) -> str:
    arr = array("Q", sorted(fps))
    if sys.byteorder == "big":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def row_digest(encoded: str) -> bytes:
    """A private row's fingerprint set (``encode_fps``, canonical: sorted), as a 16-byte digest."""
    return hashlib.blake2b(encoded.encode("ascii"), digest_size=16).digest()


def decode_fps(text: str) -> array[int]:
    arr = array("Q")
    arr.frombytes(base64.b64decode(text))
    if sys.byteorder == "big":
        arr.byteswap()
    return arr


def contains(arr: array[int], fp: int) -> bool:
    i = bisect.bisect_left(arr, fp)
    return i < len(arr) and arr[i] == fp


@dataclass
class Entry:
    call_id: str | None
    action: str
    fps: array[int]

    def name(self) -> str:
        return f"{self.action} call {self.call_id}" if self.call_id else f"{self.action} (a call without an id)"


@dataclass
class SessionIndex:
    last_id: int = 0
    first_id: int = 0  # the store's oldest row of the session when read: another one means it was dropped since
    # the store's drop generation of the session (StateStore.flow_generation) read before the rows were last
    # read; None: unknown. The same value now means every row read is still in the store (no round trip)
    generation: int | None = None
    private: list[Entry] = field(default_factory=list)
    untrusted: list[Entry] = field(default_factory=list)
    saturated: Entry | None = None
    unindexed: bool = False  # ``saturated`` is a private read the store kept no usable fingerprints of
    total: int = 0
    _merged: array[int] = field(default_factory=lambda: array("Q"))
    _pending: list[array[int]] = field(default_factory=list)
    _set: frozenset[int] | None = None
    _rows: set[bytes] = field(default_factory=set)  # digests of the private rows' fingerprint sets
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, row: tuple[int, str | None, str, str, str, int]) -> None:
        row_id, call_id, action, label, fps, n = row
        self.last_id = max(self.last_id, row_id)
        self.first_id = self.first_id or row_id
        if label == "private":
            self._rows.add(row_digest(fps))
            entry = Entry(call_id, action, decode_fps(fps))
            self.private.append(entry)
            self._pending.append(entry.fps)
            self.total += n
        elif label == "untrusted":
            self.untrusted.append(Entry(call_id, action, array("Q")))
        elif label in ("saturated", "unindexed") and self.saturated is None:
            # unindexed: a private row of the fingerprints before schema v5 (_state._flowindex); judged alike
            self.saturated = Entry(call_id, action, array("Q"))
            self.unindexed = label == "unindexed"

    def holds(self, digest: bytes) -> bool:
        """Whether a private row with exactly these fingerprints (``row_digest`` of their ``encode_fps``) is
        indexed already: a read of text the session read before adds nothing the guard does not know."""
        return digest in self._rows

    def lookup(self, fps: set[int]) -> list[Entry]:
        """The reading calls that share a fingerprint with ``fps``."""
        if self._pending:
            merged_set = set(itertools.chain(self._merged, *self._pending))
            self._merged = array("Q", sorted(merged_set))
            self._set = frozenset(merged_set) if len(merged_set) <= _SET_LIMIT else None
            self._pending = []
        merged = self._merged
        hits = list(fps & self._set) if self._set is not None else [fp for fp in fps if contains(merged, fp)]
        if not hits:
            return []
        return [e for e in self.private if any(contains(e.fps, fp) for fp in hits)]


class SessionCache:
    """The sessions' indexes this worker holds, least recently used dropped first."""

    def __init__(self, size: int = _CACHED_SESSIONS) -> None:
        self._size = size
        self._items: OrderedDict[str, SessionIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str) -> SessionIndex:
        with self._lock:
            index = self._items.get(session)
            if index is None:
                index = self._items[session] = SessionIndex()
            self._items.move_to_end(session)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            return index

    def peek(self, session: str) -> SessionIndex | None:
        """The index of ``session`` if this worker holds one (nothing is made or reordered)."""
        with self._lock:
            return self._items.get(session)

    def drop(self, session: str) -> None:
        with self._lock:
            self._items.pop(session, None)
