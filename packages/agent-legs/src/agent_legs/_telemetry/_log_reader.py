"""Reading the action log: ``read_log`` (every entry, oldest first) and ``follow_log`` (like ``tail -F``).

Invariants: a reader sees every whole line exactly once, across rotations (the files are opened as one
consistent set under the shared rotation lock and told apart by inode, not by name, since names shift
on each rotation); a torn line (a crash mid-write on a full disk) is skipped, never fatal; an action
with an intent line and no outcome line is shown once, as ``running`` while its process lives and
``unfinished`` after. Reading never writes: a reader without write access to the state dir works.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ._journal import parse_line, pending_entries, unfinished_entry
from ._log_writer import file_ino, log_files, rotation_lock

__all__ = ["follow_log", "read_log"]


def _open_log_files(path: Path) -> list[tuple[int, BinaryIO]]:
    """The log's files, oldest first, opened as one consistent set: names shift on each rotation, so
    a set in which a name no longer held the file it held when listed is reopened."""
    for _attempt in range(50):
        with rotation_lock(path, shared=True):
            files = log_files(path)
            listed = [file_ino(p) for p in files]
            handles: list[tuple[int, BinaryIO]] = []
            consistent = True
            for p, ino in zip(files, listed, strict=True):
                try:
                    h: BinaryIO = open(p, "rb")  # noqa: SIM115 - handed to the caller
                except FileNotFoundError:
                    consistent = False
                    break
                handles.append((os.fstat(h.fileno()).st_ino, h))
                if handles[-1][0] != ino:
                    consistent = False
                    break
        if consistent:
            return handles
        for _, stale in handles:
            stale.close()
        time.sleep(0.01)
    raise OSError(f"{path} keeps rotating while being read")


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """Every entry of the action log, oldest first, across the rotated backups; then every action that
    has an intent line and no outcome line yet (``outcome`` ``running`` while its process lives,
    ``unfinished`` once it has died), one entry per action."""
    journals, ids = pending_entries(path)  # before the log: an action settling meanwhile is seen there
    seen: set[str] = set()
    handles = _open_log_files(path)
    try:
        for _, h in handles:
            for entry in _entries(h):
                if ids and entry.get("id") in ids:
                    seen.add(entry["id"])
                yield entry
    finally:
        for _, h in handles:
            h.close()
    yield from _unsettled(journals, seen)


def _unsettled(journals: list[tuple[Path, bool, list[dict[str, Any]]]], seen: set[str]) -> Iterator[dict[str, Any]]:
    for _, alive, intents in journals:
        for intent in intents:
            if intent["intent"] not in seen:
                yield unfinished_entry(intent, alive)


def _entries(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip() and (entry := parse_line(line)) is not None:
            yield entry


def follow_log(path: Path, poll_s: float = 0.2, stop: threading.Event | None = None) -> Iterator[dict[str, Any] | None]:
    """The whole log (as ``read_log``), one ``None`` where what was already written ends, then every
    new entry as it is written, like ``tail -F``.

    Survives rotation without losing or repeating lines: the open file is read to its end before
    moving on, and every file rotated since (several, if the writer was quick) is read before the
    new current one. Files are told apart by inode, not name, since names shift on each rotation.
    """
    while not path.exists():
        if stop is not None and stop.is_set():
            return
        time.sleep(poll_s)
    journals, ids = pending_entries(path)
    seen: set[str] = set()

    def history(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        for entry in _entries(lines):
            if ids and entry.get("id") in ids:
                seen.add(entry["id"])
            yield entry

    f: BinaryIO = open(path, "rb")  # noqa: SIM115 - swapped on rotation below
    try:
        ino = os.fstat(f.fileno()).st_ino
        files = _open_log_files(path)
        inos = [i for i, _ in files]
        older = files[: inos.index(ino)] if ino in inos else files
        for _, h in files:
            if all(h is not o for _, o in older):
                h.close()
        for _, h in older:  # the history before the file we hold
            with h:
                yield from history(h)
        pending = b""
        live = False
        while stop is None or not stop.is_set():
            chunk = f.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    yield from (history if not live else _entries)([pending])
                    pending = b""
                continue
            current = file_ino(path)
            if not live:
                live = True
                yield from _unsettled(journals, seen)  # actions in flight or cut short, as read_log shows them
                yield None
            if current is None or current == ino:
                time.sleep(poll_s)  # nothing new (or mid-rotation: the new file appears in a moment)
                continue
            # Rotated: finish the file we hold, then whatever was rotated after it, then the new one.
            yield from _entries((pending + f.read()).splitlines())
            pending = b""
            files = _open_log_files(path)
            inos = [i for i, _ in files]
            newer = files[inos.index(ino) + 1 :] if ino in inos else files
            for _, h in files:
                if all(h is not n for _, n in newer):
                    h.close()
            if not newer:  # the new file is not there yet
                time.sleep(poll_s)
                continue
            f.close()
            *between, (ino, f) = newer
            for _, h in between:
                with h:
                    yield from _entries(h)
    finally:
        f.close()
