"""Drop generations of the exfiltration guard's index, in memory shared by every worker of one SQLite store.

Why: a worker caches each session's index (``agent_legs._flows._index``) and, when a session reads a
text whose exact fingerprint set it already holds, adds no row. That is only right while the session's
rows are still in the store: a session closed on *another* worker drops them, and the text read again
must then be written anew. Asking the store every time costs a round trip to its loop; this file lets a
worker see "no drop of this session began since I last read its rows" with one memory read.

The file (``state.sqlite3-flowgen`` beside the database, 0600 in the 0700 state directory) holds
a random id (word 0, made once by whichever process creates the file) and ``SLOTS`` 64-bit words,
mapped shared (``mmap``) by every process that opens the store. A session's word is
``1 + crc32(session) % SLOTS`` (two sessions may share one: that only costs the sharer a round trip).
Each word holds the drops of its sessions in progress (high 16 bits) and a version (low 48); a
generation is the word with the file's id above it, so a file deleted and made anew (its words
restarting at 0) never vouches for rows read under the old one, and every read and bump checks that
the path still names the file mapped (one ``stat``), mapping the new one otherwise.

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
import secrets
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
        self._file: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file mapped
        self._id = 0  # the file's random id (word 0): generations of two files never compare equal
        self._failed = False
        self._open_lock = threading.Lock()
        with _LOCKS_LOCK:
            self._lock = _LOCKS.setdefault(str(path), threading.Lock())

    def _mapped(self) -> mmap.mmap | None:
        """The mapping of the file now at ``path`` (a file replaced or deleted since is mapped anew)."""
        mapped = self._map
        if mapped is not None:
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._file:
                return mapped
            self.close()  # replaced under us: its words no longer speak for the other workers
        if self._failed:
            return None
        with self._open_lock:
            if self._map is None and not self._failed:
                try:
                    self._open()
                except (OSError, ValueError):
                    self._failed = True
            return self._map

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = (SLOTS + 1) * _WORD.size
            with self._lock:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < size:  # never shrunk: a file another worker made is kept
                        os.ftruncate(fd, size)
                    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                    (file_id,) = _WORD.unpack_from(mapped, 0)
                    if file_id == 0:  # a new file: its id, made once under the lock
                        file_id = secrets.randbits(64) | 1
                        _WORD.pack_into(mapped, 0, file_id)
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._file, self._id, self._map = fd, (st.st_dev, st.st_ino), file_id, mapped

    @staticmethod
    def _offset(session: str) -> int:
        return (zlib.crc32(session.encode("utf-8", "surrogatepass")) % SLOTS + 1) * _WORD.size

    def read(self, session: str) -> int | None:
        """``session``'s generation when no drop of it is in progress (compare with a later ``read``), else
        ``None``: its word, with the file's id above it."""
        mapped = self._mapped()
        if mapped is None:
            return None
        try:
            (word,) = _WORD.unpack_from(mapped, self._offset(session))
        except ValueError:  # closed meanwhile (the store is closing, or the file was replaced): ask the store
            return None
        return None if word >= _ACTIVE else (self._id << 64) | word

    def begin(self, session: str) -> None:
        """A drop of ``session``'s rows starts (before its ``DELETE``)."""
        self._bump(session, +1)

    def end(self, session: str) -> None:
        """That drop committed or failed."""
        self._bump(session, -1)

    def _bump(self, session: str, active: int) -> None:
        offset = self._offset(session)
        for _ in range(3):  # the file now at the path (mapped anew if it was replaced meanwhile)
            mapped = self._mapped()
            if mapped is None:
                return
            with self._lock:  # close() takes it too: the mapping stays open while it is held
                if self._map is not mapped:
                    continue
                fcntl.lockf(self._fd, fcntl.LOCK_EX)
                try:
                    (word,) = _WORD.unpack_from(mapped, offset)
                    busy = max(word // _ACTIVE + active, 0)
                    _WORD.pack_into(mapped, offset, busy * _ACTIVE + ((word & _VERSION) + 1) % _ACTIVE)
                finally:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)
                return

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
