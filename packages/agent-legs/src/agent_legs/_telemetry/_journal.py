"""The write-ahead half of the action log: the intent journals in ``<state_dir>/actions.pending/``.

Invariant: a call's intent line is on disk before its handler can have any effect; a call whose intent
cannot be written does not run. So every effect that took place has a record: its outcome line in
``actions.jsonl``, or, when the process died first, an ``unfinished`` one (``recover_pending`` moves
it there; ``read_log`` shows it meanwhile). Threat model: the process may be killed at any instruction
(a journal's ``flock`` goes with it, which is how a dead journal is told from a live one); several
processes may recover the same state dir at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ._log_writer import ActionLog, ActionLogError, append_whole, complete_short_write, describe_os_error

__all__ = [
    "PENDING_DIR",
    "UNFINISHED_ERROR",
    "IntentJournal",
    "parse_line",
    "pending_entries",
    "recover_pending",
    "unfinished_entry",
]

log = logging.getLogger("agent_legs")

PENDING_DIR = "actions.pending"
_JOURNAL_COMPACT_BYTES = 65_536
UNFINISHED_ERROR = (
    "the process running this action ended before it finished (killed or crashed); its effect "
    "may or may not have taken place: check the target"
)


class IntentJournal:
    """The write-ahead half of the action log: an intent line is on disk before an action's effect can happen.

    Each process (each ``Legs``) appends to its own ``<state_dir>/actions.pending/<pid>-<random>.jsonl``
    and holds an exclusive ``flock`` on it for its life, so anyone can tell a live journal from the
    journal of a process that died: the lock goes with the process, whatever killed it. An action's
    intent line is written (one ``write(2)``, checked length, rolled back if short) before its handler
    runs; once its outcome line is in ``actions.jsonl`` a small ``done`` line settles it. The ``done``
    lines are not written on their own: they go out in the same ``write(2)`` as the next intent line
    (or at ``close``), so a call costs one journal write, not two. A ``done`` line still waiting when
    the process dies changes nothing: its outcome line is in the log, and readers and recovery both
    skip an intent whose id the log already has. The file is emptied when no action is in flight and
    it has grown past 64 KiB, so it stays small. An intent without its ``done`` and without an outcome
    line is an action that never finished: ``read_log`` shows it (``running`` while the process lives,
    ``unfinished`` after), and the next ``Legs`` opened on the state dir moves it into ``actions.jsonl``
    as an ``unfinished`` line and removes the dead journal.

    Durability: ``write(2)`` puts the line in the page cache, which survives the death of the process
    (SIGKILL, OOM kill, crash); it does not survive a power loss or kernel crash (no ``fsync``, which
    would cost a disk flush per action).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._open_ids: set[str] = set()
        self._settled = b""  # done lines not written yet: they go out with the next intent line
        self._size = 0
        self.pid = os.getpid()

    def _ensure_open(self) -> int:
        if self._fd is not None:
            return self._fd
        import fcntl
        import secrets as _random

        self.directory.mkdir(mode=0o700, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{_random.token_hex(4)}.jsonl"
        # Locked before it gets the name readers and recoverers look for: a journal is never seen unlocked
        # while its process lives (a recoverer would take it for a dead one's and remove it).
        tmp = path.with_suffix(".new")
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.path, self._fd, self.pid = path, fd, os.getpid()
        return fd

    def append_intent(self, record_id: str, line: bytes) -> None:
        """Append an encoded intent line (``{"intent": record_id, ...}``); raises ``ActionLogError`` when it
        is not on disk (the action must not run)."""
        lock = self._lock  # acquire/release, not ``with``: no bound ``__exit__`` allocated per call
        try:
            lock.acquire()
            try:
                fd = self._fd if self._fd is not None else self._ensure_open()
                data = self._settled + line if self._settled else line
                n = os.write(fd, data)  # the waiting done lines and the intent: whole, or not at all
                if n != len(data):
                    complete_short_write(fd, data, n)
                self._settled = b""
                self._size += len(data)
                self._open_ids.add(record_id)
            finally:
                lock.release()
        except OSError as exc:
            raise ActionLogError(exc, f"{self.directory}") from None

    def done(self, record_id: str) -> None:
        """The outcome line of ``record_id`` is in the log: its intent is settled (written with the next intent)."""
        lock = self._lock
        lock.acquire()
        try:
            if record_id not in self._open_ids or self._fd is None:
                return
            self._open_ids.discard(record_id)
            if not self._open_ids and self._size >= _JOURNAL_COMPACT_BYTES:
                try:
                    os.ftruncate(self._fd, 0)  # nothing in flight: every intent in the file is settled
                    self._size, self._settled = 0, b""
                    return
                except OSError:
                    pass  # the done line below settles it instead
            self._settled += b'{"done":"' + record_id.encode() + b'"}\n'
        finally:
            lock.release()

    def close(self) -> None:
        """Release the journal; it is removed unless it holds an action whose outcome never reached the log."""
        with self._lock:
            if self._fd is None:
                return
            if not self._open_ids and self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            elif self._settled:  # kept for recovery: settle what is settled (recovery would skip it anyway)
                with contextlib.suppress(OSError):
                    append_whole(self._fd, self._settled)
            self._settled = b""
            os.close(self._fd)  # releases the lock: a journal left behind is read as unfinished
            self._fd = None


def pending_entries(path: Path) -> tuple[list[tuple[Path, bool, list[dict[str, Any]]]], set[str]]:
    """Every journal next to the log: (file, owner alive, unsettled intents in order)."""
    directory = path.parent / PENDING_DIR
    out: list[tuple[Path, bool, list[dict[str, Any]]]] = []
    ids: set[str] = set()
    try:
        names = sorted(directory.glob("*.jsonl"))
    except OSError:
        return out, ids
    for p in names:
        try:
            f = open(p, "rb")  # noqa: SIM115 - closed below
        except OSError:
            continue
        with f:
            alive = _locked_by_someone(f.fileno())
            intents = _open_intents(f)
        if intents:
            out.append((p, alive, list(intents.values())))
            ids.update(intents)
    return out, ids


def _locked_by_someone(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def unfinished_entry(intent: dict[str, Any], alive: bool) -> dict[str, Any]:
    """The log entry of an action that has an intent line and no outcome line."""
    entry = {k: v for k, v in intent.items() if k != "intent"}
    entry["id"] = intent["intent"]
    entry["outcome"] = "running" if alive else "unfinished"
    entry["duration_ms"] = None
    entry["error"] = None if alive else UNFINISHED_ERROR
    return entry


def recover_pending(action_log: ActionLog, own: Path | None = None) -> int:
    """Move the unsettled intents of dead processes into the log as ``unfinished`` lines; remove their journals.

    Safe against concurrent recoverers (each journal is handled under its exclusive lock) and against a
    crash between an outcome line and its ``done`` line (an id already in the log is not repeated).
    Returns how many lines were written; a journal whose lines cannot be written yet stays for next time.
    """
    try:
        import fcntl
    except ImportError:
        return 0
    directory = action_log.path.parent / PENDING_DIR
    written = 0
    try:
        names = sorted(directory.glob("*.jsonl"))
        unborn = list(directory.glob("*.new"))  # a process killed before naming its (empty) journal
    except OSError:
        return 0
    for p in unborn:
        with contextlib.suppress(OSError):
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                p.unlink()
            finally:
                os.close(fd)
    for p in names:
        if own is not None and p == own:
            continue
        try:
            fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # removed by another recoverer (or its owner's close) meanwhile
            with open(fd, "rb", closefd=False) as f:
                intents = _open_intents(f)
            logged = action_log.logged_ids(intents) if intents else set()
            for record_id, intent in intents.items():
                if record_id in logged:
                    continue
                action_log.write(unfinished_entry(intent, alive=False))
                written += 1
            p.unlink()
        except OSError as exc:
            log.warning("could not recover the unfinished actions of %s: %s", p, describe_os_error(exc))
        finally:
            os.close(fd)
    return written


def _open_intents(journal: BinaryIO) -> dict[str, dict[str, Any]]:
    """The intents of a journal that have no ``done`` line, by record id (torn lines are skipped)."""
    intents: dict[str, dict[str, Any]] = {}
    for line in journal:
        entry = parse_line(line)
        if entry is None:
            continue
        if isinstance(entry.get("intent"), str):
            intents[entry["intent"]] = entry
        elif isinstance(entry.get("done"), str):
            intents.pop(entry["done"], None)
    return intents


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None  # a torn line (a crash mid-write on a full disk): skip it, keep the rest
    return entry if isinstance(entry, dict) else None
