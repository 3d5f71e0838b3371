"""Drop generations of the exfiltration guard's index, in memory shared by every worker of one SQLite store.

Why: a worker caches each session's index (``agent_legs._flows._index``) and, when a session reads a
text whose exact fingerprint set it already holds, adds no row. That is only right while the session's
rows are still in the store: a session closed on *another* worker drops them, and the text read again
must then be written anew. Asking the store every time costs a round trip to its loop; this file lets a
worker see "no drop of this session began since I last read its rows" with one memory read.

The file (``state.sqlite3-flowgen`` beside the database, 0600 in the 0700 state directory) holds
``SLOTS`` 64-bit words, mapped shared (``mmap``) by every process that opens the store. A session's
word is ``crc32(session) % SLOTS`` (two sessions may share one: that only costs the sharer a round
trip). Each word holds the drops of its sessions in progress (high 16 bits) and a version (low 48).

Protocol (``StateStore.drop_flow_entries``):

* ``begin(session)`` before the ``DELETE`` starts: in progress + 1, version + 1;
* ``end(session)`` after it committed (or failed): in progress - 1, version + 1;
* a reader (``read``) takes the word *before* it reads the session's rows from the store, and trusts
  the rows it read only under a word with no drop in progress (``None`` otherwise); later, the word
  unchanged means no drop began since, so the rows it read are all still in the store.

Why that is exact: a drop in progress when the reader took the word makes it ``None`` (not trusted); a
drop that ended before had committed, so the rows read after reflect it; a drop that begins after
changes the word before its ``DELETE`` can commit. Writers serialize on ``lockf`` of the file (across
processes) and a lock per file (across threads), so no bump is lost. A torn read (a word being written)
is either the old value (the read came first) or a value that differs from any cached one.

Degrades safely: a file that cannot be opened or mapped (``read`` returns ``None``: every check asks
the store, as before), a worker killed between ``begin`` and ``end`` (its word keeps a drop in
progress: that slot's sessions ask the store from then on). The same premise as SQLite's WAL, whose
``-shm`` index is shared memory too: every worker runs on this machine (PostgreSQL deployments have no
such file and keep the round trip).

Threat model: the model never reaches this file; a local user who can write the state directory can
already change the database itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
import zlib
from pathlib import Path

__all__ = ["SLOTS", "FlowGenerations"]

SLOTS = 4096
_WORD = struct.Struct("<Q")
_ACTIVE = 1 << 48
_VERSION = _ACTIVE - 1
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


class FlowGenerations:
    """The shared words of one store file (opened on first use; ``None`` from ``read`` when unusable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._failed = False
        self._open_lock = threading.Lock()
        with _LOCKS_LOCK:
            self._lock = _LOCKS.setdefault(str(path), threading.Lock())

    def _mapped(self) -> mmap.mmap | None:
        if self._map is not None or self._failed:
            return self._map
        with self._open_lock:
            if self._map is None and not self._failed:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    try:
                        size = SLOTS * _WORD.size
                        if os.fstat(fd).st_size < size:  # never shrunk: a file another worker made is kept
                            with self._lock:
                                fcntl.lockf(fd, fcntl.LOCK_EX)
                                try:
                                    if os.fstat(fd).st_size < size:
                                        os.ftruncate(fd, size)
                                finally:
                                    fcntl.lockf(fd, fcntl.LOCK_UN)
                        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                        self._fd = fd
                    except BaseException:
                        os.close(fd)
                        raise
                except (OSError, ValueError):
                    self._failed = True
        return self._map

    @staticmethod
    def _offset(session: str) -> int:
        return (zlib.crc32(session.encode("utf-8", "surrogatepass")) % SLOTS) * _WORD.size

    def read(self, session: str) -> int | None:
        """``session``'s word when no drop of it is in progress (compare with a later ``read``), else ``None``."""
        mapped = self._mapped()
        if mapped is None:
            return None
        try:
            (word,) = _WORD.unpack_from(mapped, self._offset(session))
        except ValueError:  # closed meanwhile (the store is closing): ask the store
            return None
        return None if word >= _ACTIVE else word

    def begin(self, session: str) -> None:
        """A drop of ``session``'s rows starts (before its ``DELETE``)."""
        self._bump(session, +1)

    def end(self, session: str) -> None:
        """That drop committed or failed."""
        self._bump(session, -1)

    def _bump(self, session: str, active: int) -> None:
        mapped = self._mapped()
        if mapped is None:
            return
        offset = self._offset(session)
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                (word,) = _WORD.unpack_from(mapped, offset)
                busy = max(word // _ACTIVE + active, 0)
                _WORD.pack_into(mapped, offset, busy * _ACTIVE + ((word & _VERSION) + 1) % _ACTIVE)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._open_lock, self._lock:
            mapped, self._map = self._map, None
            if mapped is not None:
                with contextlib.suppress(BufferError, OSError):
                    mapped.close()
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
