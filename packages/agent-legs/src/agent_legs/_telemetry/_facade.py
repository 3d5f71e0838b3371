"""The one place that emits Agent Legs telemetry: the ``execute_tool`` span and the action log.

Every ``run``/``arun`` call produces exactly one span (OpenTelemetry GenAI conventions plus
``agent_legs.*`` attributes) and exactly one JSON line in ``<state_dir>/actions.jsonl``. The
action log is written directly (not through a span processor), so it stays complete whatever
the tracer provider or collector does.

Invariants of the action log (threat model: the host process may be SIGKILLed at any instruction,
the disk may fill up, the state dir may lose its permissions; the model may send payloads of any size):

* write-ahead: a call's intent line is on disk (``IntentJournal``) before its handler can have any
  effect; a call whose intent cannot be written does not run (``unavailable``). So every effect that
  took place has a record: its outcome line, or, when the process died first, an ``unfinished`` one;
* every line is whole JSON: one ``write(2)`` per line, a short write rolled back, a torn tail fenced off;
* a line's size does not grow with the payload: long argument values are a redacted preview, size and hash;
* failures to write are classified (disk full, permission denied, too many open files...) and warned once
  per cause, never a traceback per call.

Span export is best effort and bounded: ``shutdown`` returns within its bound whatever the collector
does, and the spans lost are counted (``Telemetry.spans_dropped``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._errors import ActionError
from ._secrets import Redactor
from ._settings import TelemetrySettings
from ._version import __version__

__all__ = [
    "ActionLog",
    "ActionLogError",
    "CallRecord",
    "IntentJournal",
    "Telemetry",
    "application_provider",
    "bounded_arguments",
    "describe_os_error",
    "follow_log",
    "log_files",
    "read_log",
    "recover_pending",
]

log = logging.getLogger("agent_legs")

# Keys of the arguments that best say what an action touched (the log's "target" column).
_TARGET_KEYS = ("url", "path", "source", "to", "id", "selector", "text", "language")


@dataclass(slots=True)
class CallRecord:
    """Everything known about one call when it ends."""

    action: str
    tool_name: str
    session: str
    call_id: str | None
    decision: str
    outcome: str
    duration_ms: float
    arguments: Any = None
    result: Any = None
    error_message: str | None = None
    rule: str | None = None
    record_id: str | None = None  # the intent line's id, when the action got as far as its handler
    approval: dict[str, Any] | None = None  # {"decision", "by", "rule"} when the call went through approval


def _truncate(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[:limit] + f"...[{len(s) - limit} more chars]"


# Strings of the arguments longer than this are logged as a redacted preview with their size and hash,
# and arguments whose JSON is longer than _MAX_ARGUMENTS_CHARS as one such string: a line's size does
# not grow with the payload (a 20 MB files.write costs the same line as a 2 kB one).
PREVIEW_CHARS = 1024
_MAX_ARGUMENTS_CHARS = 16_384


def bounded_arguments(arguments: Any, redactor: Redactor) -> Any:
    """The arguments as the log keeps them: redacted, each long string replaced by a preview, size and sha256."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redactor.text(value) if len(value) <= PREVIEW_CHARS else _digest(value, redactor)
        if isinstance(value, dict):
            return {(redactor.text(k) if isinstance(k, str) else k): walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    out = walk(arguments)
    text = _dumps(out)
    return _digest(text, redactor) if len(text) > _MAX_ARGUMENTS_CHARS else out


def _digest(value: str, redactor: Redactor) -> str:
    # Redacted BEFORE the cut (a secret straddling the cut is never half shown), hashed after redaction
    # (the hash of a value without secrets is the hash of what was written).
    text = redactor.text(value)
    raw = text.encode("utf-8", "backslashreplace")
    return f"{text[:PREVIEW_CHARS]}...[{len(text)} chars, {len(raw)} bytes UTF-8, sha256 {hashlib.sha256(raw).hexdigest()}]"


def _target(arguments: Any) -> str | None:
    if not isinstance(arguments, dict):
        return None
    for key in _TARGET_KEYS:
        value = arguments.get(key)
        if value:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            return _truncate(text.replace("\n", " "), 200)
    return None


class ActionLogError(OSError):
    """The action log (or its write-ahead journal) cannot be written; ``reason`` says why in plain words."""

    def __init__(self, exc: OSError, where: str) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.reason = describe_os_error(exc, with_path=False)  # for the model: no path of the state dir
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def describe_os_error(exc: OSError, with_path: bool = True) -> str:
    """A resource error in plain words (no traceback): disk full, permission denied, too many open files..."""
    words = {
        errno.ENOSPC: "no space left on the device (the disk is full)",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
        errno.EMFILE: "too many open files in this process",
        errno.ENFILE: "too many open files on this system",
        errno.EFBIG: "the file is too large",
        errno.ENOENT: "the directory no longer exists",
        errno.EIO: "an I/O error from the device",
    }.get(exc.errno or 0)
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    where = f" ({exc.filename})" if with_path and getattr(exc, "filename", None) else ""
    return f"{words or exc.strerror or str(exc)} [{name}]{where}"


_TAIL_SETTLE_TRIES = 5  # checks of a log tail without a newline before it is taken for a torn line


def _append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` with one ``write(2)`` on an ``O_APPEND`` descriptor, or leave the file as it was.

    A regular file only takes part of a write when the disk fills up, a size limit is reached or the
    process is killed in the middle of a large write. On a short write the rest is tried once (which
    either completes the line in place or tells the real reason: ENOSPC, EFBIG, EDQUOT); a line that
    is still incomplete is cut off again with ``ftruncate`` (when nobody appended after it), so the
    file never keeps a fragment that the next line would be glued to.
    """
    n = os.write(fd, data)
    if n == len(data):
        return
    end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: the offset is the end of what we wrote
    error: OSError = OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)")
    try:
        m = os.write(fd, data[n:])
        if m == len(data) - n and os.lseek(fd, 0, os.SEEK_CUR) == end + m:
            return  # the rest went right after the first part: the line is whole
        if os.lseek(fd, 0, os.SEEK_CUR) == end + m:
            end, n = end + m, n + m
    except OSError as exc:
        error = exc
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, end - n)
    raise error


def _ends_with_newline(fd: int) -> bool:
    """Whether the file ends with a whole line. Another process's append may be half-visible (Linux
    grows the size page by page during one ``write``): a tail that is still growing is not torn, so
    the answer "torn" is given only for a tail that stays put for a few milliseconds."""
    size = os.fstat(fd).st_size
    for _ in range(_TAIL_SETTLE_TRIES):
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return True
        time.sleep(0.002)
        grown = os.fstat(fd).st_size
        if grown == size:
            return False  # a fragment nobody is writing: a crash or a full disk left it
        size = grown
    return False


class ActionLog:
    """Append-only JSON lines, flushed per action; rotated by size without losing lines.

    Invariants: every line is whole JSON. Each line goes out in one ``write(2)`` on an ``O_APPEND``
    descriptor, so several processes sharing a state dir (an agent and ``agent-legs run``) never
    interleave half lines; a short write (full disk) is rolled back with ``ftruncate``; a file found
    ending without a newline (a process killed inside a write) gets one before the next line, so a
    fragment never swallows a whole line. When another process has rotated the file, the next write
    reopens the new one instead of feeding the backup. A write that fails raises ``ActionLogError``
    (classified: disk full, permission denied, too many open files, ...).
    """

    def __init__(self, path: Path, max_bytes: int = 50_000_000, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino = 0
        self._guard = False  # the file ends inside a line: start the next one with a newline
        with contextlib.suppress(OSError):  # a log that cannot be opened now fails the first action instead
            self._open()

    def _open(self) -> None:
        # 0o600: the log holds (redacted) arguments of every call; it is nobody else's business.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._ino = os.fstat(fd).st_ino
            self._guard = not _ends_with_newline(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def write(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode(
            "utf-8", "backslashreplace"
        )  # a lone surrogate must not cost the line
        try:
            with self._lock:
                self._write(data)
        except OSError as exc:
            raise exc if isinstance(exc, ActionLogError) else ActionLogError(exc, f"{self.path}") from None

    def _write(self, data: bytes) -> None:
        if self._fd is not None and _ino(self.path) != self._ino:  # rotated (or removed) by someone else
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            self._open()
        assert self._fd is not None
        if self._guard:
            _append_whole(self._fd, b"\n")
            self._guard = False
        try:
            _append_whole(self._fd, data)
        except OSError:
            with contextlib.suppress(OSError):  # a rollback that could not happen: guard the next line
                self._guard = not _ends_with_newline(self._fd)
            raise
        if os.fstat(self._fd).st_size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self._fd is not None
        # Processes sharing the log rotate one at a time (two shifting .1 -> .2 -> ... at once would
        # overwrite each other's backups); the one that comes second finds the work done.
        with _rotation_lock(self.path):
            if _ino(self.path) == self._ino and os.fstat(self._fd).st_size >= self.max_bytes:
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                if self.backups > 0:
                    os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
                else:
                    self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
            self._open()

    def logged_ids(self, record_ids: Iterable[str]) -> set[str]:
        """Which of ``record_ids`` already have their outcome line in some file of the log (crash recovery:
        a process killed between its outcome line and its journal's ``done`` line). One pass per file."""
        wanted = {f'"{i}"'.encode(): i for i in record_ids}  # 16 random hex digits: nothing else matches
        found: set[str] = set()
        for p in reversed(log_files(self.path)):
            if not wanted:
                break
            with contextlib.suppress(OSError), open(p, "rb") as f:
                data = f.read()
                for needle in [n for n in wanted if n in data]:
                    found.add(wanted.pop(needle))
        return found

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


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
    runs; once its outcome line is in ``actions.jsonl`` a small ``done`` line follows, and the file is
    emptied when no action is in flight and it has grown past 64 KiB, so it stays small. An intent
    without its ``done`` is an action that never finished: ``read_log`` shows it (``running`` while the process lives,
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

    def intent(self, record_id: str, entry: dict[str, Any]) -> None:
        """Append the intent line; raises ``ActionLogError`` when it is not on disk (the action must not run)."""
        data = (json.dumps({"intent": record_id, **entry}, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode(
            "utf-8", "backslashreplace"
        )
        try:
            with self._lock:
                fd = self._ensure_open()
                _append_whole(fd, data)
                self._size += len(data)
                self._open_ids.add(record_id)
        except OSError as exc:
            raise ActionLogError(exc, f"{self.directory}") from None

    def done(self, record_id: str) -> None:
        """The outcome line of ``record_id`` is in the log: its intent is settled."""
        with self._lock:
            if record_id not in self._open_ids or self._fd is None:
                return
            self._open_ids.discard(record_id)
            try:
                if not self._open_ids and self._size >= _JOURNAL_COMPACT_BYTES:
                    os.ftruncate(self._fd, 0)  # nothing in flight: every intent in the file is settled
                    self._size = 0
                else:
                    line = b'{"done":"' + record_id.encode() + b'"}\n'
                    _append_whole(self._fd, line)
                    self._size += len(line)
            except OSError:  # a settled intent read as unfinished later is a duplicate record, not a lost one
                self._open_ids.add(record_id)

    def close(self) -> None:
        """Release the journal; it is removed unless it holds an action whose outcome never reached the log."""
        with self._lock:
            if self._fd is None:
                return
            if not self._open_ids and self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self._fd)  # releases the lock: a journal left behind is read as unfinished
            self._fd = None


def _pending_entries(path: Path) -> tuple[list[tuple[Path, bool, list[dict[str, Any]]]], set[str]]:
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


def _unfinished(intent: dict[str, Any], alive: bool) -> dict[str, Any]:
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
                action_log.write(_unfinished(intent, alive=False))
                written += 1
            p.unlink()
        except OSError as exc:
            log.warning("could not recover the unfinished actions of %s: %s", p, describe_os_error(exc))
        finally:
            os.close(fd)
    return written


@contextlib.contextmanager
def _rotation_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Writers rotate under the exclusive lock; readers list and open the files under the shared one,
    so they never see names half-way through a shift."""
    try:
        import fcntl
    except ImportError:  # Windows: one process per state dir is assumed there
        yield
        return
    try:
        lock = open(path.with_name(f".{path.name}.lock"), "a")  # noqa: SIM115 - closed below
    except OSError:
        if not shared:
            raise
        yield  # a reader without write access to the state dir: the inode checks still apply
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def log_files(path: Path) -> list[Path]:
    """The action log and its rotated backups, oldest first (``actions.jsonl.N`` ... ``.1``, then the file)."""
    backups: list[tuple[int, Path]] = []
    for p in path.parent.glob(f"{path.name}.*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), p))
    files = [p for _, p in sorted(backups, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def _open_intents(journal: BinaryIO) -> dict[str, dict[str, Any]]:
    """The intents of a journal that have no ``done`` line, by record id (torn lines are skipped)."""
    intents: dict[str, dict[str, Any]] = {}
    for line in journal:
        entry = _parse(line)
        if entry is None:
            continue
        if isinstance(entry.get("intent"), str):
            intents[entry["intent"]] = entry
        elif isinstance(entry.get("done"), str):
            intents.pop(entry["done"], None)
    return intents


def _parse(line: str | bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None  # a torn line (a crash mid-write on a full disk): skip it, keep the rest
    return entry if isinstance(entry, dict) else None


def _open_log_files(path: Path) -> list[tuple[int, BinaryIO]]:
    """The log's files, oldest first, opened as one consistent set: names shift on each rotation, so
    a set in which a name no longer held the file it held when listed is reopened."""
    for _attempt in range(50):
        with _rotation_lock(path, shared=True):
            files = log_files(path)
            listed = [_ino(p) for p in files]
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
    journals, ids = _pending_entries(path)  # before the log: an action settling meanwhile is seen there
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
                yield _unfinished(intent, alive)


def _ino(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None


def _entries(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip() and (entry := _parse(line)) is not None:
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
    journals, ids = _pending_entries(path)
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
            current = _ino(path)
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


def application_provider() -> trace.TracerProvider | None:
    """The provider the application installed with ``trace.set_tracer_provider`` (an SDK provider,
    Phoenix's, Logfire's, ...), or ``None`` while only the API's default proxy / a no-op is there."""
    provider = trace.get_tracer_provider()
    # Exactly the API's proxy (a library's own proxy class, e.g. Logfire's, is a real provider).
    if type(provider) is trace.ProxyTracerProvider or isinstance(provider, trace.NoOpTracerProvider):
        return None
    return provider


class _Tracer(trace.Tracer):
    """Our tracer, choosing its provider per span: the one passed to ``Legs``, else the application's
    global provider, else our own.

    The choice is made per span (one global read), not once: an application that installs its provider
    after building ``Legs`` (Phoenix ``register()`` after an import-time ``Legs()``) gets every later span.
    """

    def __init__(self, fixed: trace.TracerProvider | None, own: trace.TracerProvider | None) -> None:
        self._fixed = fixed.get_tracer("agent_legs", __version__) if fixed is not None else None
        self._own = own.get_tracer("agent_legs", __version__) if own is not None else None
        self._app: tuple[trace.TracerProvider, trace.Tracer] | None = None

    def current(self) -> trace.Tracer:
        if self._fixed is not None:
            return self._fixed
        app = application_provider()
        if app is not None:
            cached = self._app
            if cached is None or cached[0] is not app:
                cached = self._app = (app, app.get_tracer("agent_legs", __version__))
            return cached[1]
        if self._own is None:  # only when an application provider was there at start, and is gone
            return trace.NoOpTracer()
        return self._own

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        return self.current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.current().start_as_current_span(*args, **kwargs)


class Telemetry:
    """Where spans go (``provider``: ``"explicit"``, ``"application"`` or ``"internal"``) and the action log.

    Spans go to the provider passed to ``Legs``; else to the application's global provider when it has
    set one; else to our own (OTLP when the standard variables say where; otherwise it records nothing).
    The action log is written in every case, with the call's trace and span ids: those ids are real
    (a span nobody records still has them, and the caller's trace id when nested), and always name the
    call's line in the action log (``agent-legs log --trace ID``).
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        state_dir: Path,
        redactor: Redactor,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.redactor = redactor
        self._own_provider: TracerProvider | None = None
        self._exporter: _GuardedExporter | None = None
        if tracer_provider is not None:
            self.tracer = _Tracer(tracer_provider, None)
        elif application_provider() is not None:
            self.tracer = _Tracer(None, None)
        else:
            self._own_provider, self._exporter = _default_provider(settings)
            self.tracer = _Tracer(None, self._own_provider)
        self._explicit = tracer_provider is not None
        self.action_log = ActionLog(state_dir / "actions.jsonl")
        self.journal = IntentJournal(state_dir / PENDING_DIR)
        self._intent_args: dict[str, Any] = {}  # record id -> bounded arguments, computed once per call
        self._log_problem: str | None = None  # the last write failure, warned once until it changes
        self._dropped_at_close: int | None = None
        # Actions cut short by a process that died (SIGKILL, OOM, crash) get their "unfinished" line now.
        recovered = recover_pending(self.action_log)
        if recovered:
            log.warning(
                "%d action(s) of a process that ended before they finished are in the action log as outcome 'unfinished' (%s)",
                recovered,
                self.action_log.path,
            )

    @property
    def spans_dropped(self) -> int:
        """Spans of our own provider that did not reach the collector (queue full, export failed, or still
        queued at ``close()``). Exact after ``shutdown``; 0 when spans go to the caller's provider."""
        if self._dropped_at_close is not None:
            return self._dropped_at_close
        return self._exporter.dropped if self._exporter is not None else 0

    # -- the write-ahead intent ------------------------------------------------------------------
    def intent(self, span: Span, rec: CallRecord) -> str:
        """Put the call's intent line on disk before its effect can happen; returns the record id.

        Raises ``ActionError("unavailable")`` when the line cannot be written: the action must not run.
        """
        record_id = secrets.token_hex(8)
        arguments = bounded_arguments(rec.arguments, self.redactor) if self.settings.capture_content else None
        entry = self._entry(span, rec)
        entry.pop("outcome", None)
        entry.pop("duration_ms", None)
        entry.pop("error", None)
        entry["pid"] = self.journal.pid
        if arguments is not None:
            entry["arguments"] = arguments
        try:
            self.journal.intent(record_id, entry)
        except ActionLogError as exc:
            self._log_failed(str(exc))
            raise ActionError(
                "unavailable",
                f"the action log cannot be written: {exc.reason}; {rec.action} did not run",
                hint="Nothing was done. The log's disk or directory needs an operator (free space, permissions, "
                "open files); tell the user instead of retrying.",
            ) from None
        if arguments is not None:
            self._intent_args[record_id] = arguments
        return record_id

    def _log_failed(self, reason: str) -> None:
        if self._log_problem != reason:
            self._log_problem = reason
            log.warning("the action log cannot be written: %s; actions fail closed until it can", reason)

    def _entry(self, span: Span, rec: CallRecord) -> dict[str, Any]:
        ctx = span.get_span_context()
        redact = self.redactor
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "trace_id": f"{ctx.trace_id:032x}" if ctx.is_valid else None,
            "span_id": f"{ctx.span_id:016x}" if ctx.is_valid else None,
            "action": rec.action,
            "session": rec.session,
            "call_id": rec.call_id,
            "decision": rec.decision,
            "outcome": rec.outcome,
            "duration_ms": round(rec.duration_ms, 3),
            "error": redact.text(rec.error_message) if rec.error_message else None,
            "rule": rec.rule,
            "target": _target(redact.data(rec.arguments)),  # scrubbed whole, before _target cuts it
        }
        if rec.approval:  # who decided: on the intent line too, so a call cut short by a crash keeps it
            entry["approval"] = redact.data(rec.approval)
        return entry

    @property
    def provider(self) -> str:
        """Where the next span goes: ``explicit`` (passed to Legs), ``application`` (the global one) or ``internal``."""
        if self._explicit:
            return "explicit"
        return "application" if application_provider() is not None else "internal"

    # -- spans -------------------------------------------------------------------------------
    def start(
        self,
        tool_name: str,
        action: str,
        session: str,
        call_id: str | None,
        parent: otel_context.Context | None,
        description: str | None = None,
    ) -> Span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_name,
            "gen_ai.tool.type": "function",
            "agent_legs.action": action,
            "agent_legs.session": session,
        }
        if description:
            attributes["gen_ai.tool.description"] = _truncate(description, self.settings.max_attribute_chars)
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        return self.tracer.start_span(
            f"{self.settings.span_name_prefix} {tool_name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )

    def finish(self, span: Span, rec: CallRecord) -> None:
        """Close the call's span and write its action-log line (both redacted)."""
        redact = self.redactor
        capture = self.settings.capture_content
        limit = self.settings.max_attribute_chars
        error_message = redact.text(rec.error_message) if rec.error_message else None

        if span.is_recording():  # not when sampled out: the attributes would be dropped unread
            attributes: dict[str, Any] = {"agent_legs.decision": rec.decision, "agent_legs.outcome": rec.outcome}
            if rec.rule:
                attributes["agent_legs.rule"] = rec.rule
            if rec.approval:
                attributes["agent_legs.approval.decision"] = rec.approval["decision"]
                if rec.approval.get("by"):
                    attributes["agent_legs.approval.by"] = redact.text(str(rec.approval["by"]))
            if capture:
                attributes["gen_ai.tool.call.arguments"] = _truncate(_dumps(redact.data(rec.arguments)), limit)
                if rec.result is not None:
                    # The text the model reads, as it reads it (a JSON string would quote and escape it).
                    result = rec.result if isinstance(rec.result, str) else _dumps(rec.result)
                    attributes["gen_ai.tool.call.result"] = _truncate(redact.text(result), limit)
            if rec.outcome != "ok":
                attributes["error.type"] = rec.outcome
                span.set_status(Status(StatusCode.ERROR, error_message or rec.outcome))
            span.set_attributes(attributes)
        span.end()

        entry = self._entry(span, rec)
        record_id = rec.record_id or secrets.token_hex(8)
        entry["id"] = record_id
        if capture:
            entry["arguments"] = (
                self._intent_args.pop(record_id) if record_id in self._intent_args else bounded_arguments(rec.arguments, redact)
            )
        else:
            self._intent_args.pop(record_id, None)
        try:
            self.action_log.write(entry)
        except ActionLogError as exc:
            # After the effect: its intent line stays in the journal and reads as "unfinished".
            self._log_failed(str(exc))
            return
        if self._log_problem is not None:
            self._log_problem = None
            log.info("the action log can be written again (%s)", self.action_log.path)
        if rec.record_id is not None:
            self.journal.done(rec.record_id)

    def shutdown(self, timeout_s: float = 1.2) -> None:
        """Close the action log; flush and stop our own provider within ``timeout_s`` whatever the collector does.

        ``BatchSpanProcessor.force_flush`` ignores its timeout (it exports on the calling thread, one
        request per batch, each with its own timeout and retries), so both steps run on a daemon helper
        thread that we wait for with a bound; past it the exporter is told to give up and the thread is
        left to die with the process. Our provider is built without the SDK's exit hook (which would
        wait on a stuck export again at interpreter exit), so exit is not held either. Spans that did
        not reach the collector are counted (``spans_dropped``) and reported in one warning. An
        application's own provider is never flushed or shut down here.
        """
        self.action_log.close()
        self.journal.close()
        provider = self._own_provider
        if provider is None:
            return
        self._own_provider = None
        exporter = self._exporter

        def flush_and_stop() -> None:
            provider.force_flush(int(timeout_s * 1000))
            provider.shutdown()

        t = threading.Thread(target=flush_and_stop, daemon=True, name="agent-legs-otel-shutdown")
        t.start()
        deadline = time.monotonic() + timeout_s
        while t.is_alive() and time.monotonic() < deadline:
            # A collector that already failed (or is failing right now: the exporter is in its retry
            # back-off) gets no more waiting: its spans would only be late, close() would be too.
            if exporter is not None and exporter.failing:
                break
            t.join(0.05)
        if exporter is None:
            return
        if t.is_alive():
            exporter.abandon()
            t.join(0.1)
        self._dropped_at_close = dropped = exporter.dropped_at_close()
        if dropped:
            log.warning(
                "%d span(s) were dropped: they never reached the collector at %s (queue full, export "
                "failed, or still queued at close). Actions are unaffected; the action log (agent-legs "
                "log) is complete.",
                dropped,
                exporter.endpoint,
            )

    # -- nesting -------------------------------------------------------------------------------
    def caller_context(self) -> otel_context.Context:
        """The OpenTelemetry context our span is parented to; call it on the caller's thread.

        Normally the caller's current context. OpenInference's LangChain instrumentor creates a span
        per tool run but never makes it current (attaching context from callbacks is unsafe), so a
        ``legs.run`` inside a LangChain tool would land beside the tool span instead of under it;
        when that instrumentor is active, its ``get_current_span()`` names the tool's span.
        """
        ctx = otel_context.get_current()
        span = _openinference_langchain_span()
        if span is None:
            return ctx
        current = trace.get_current_span(ctx)
        if current is span:
            return ctx
        if current.get_span_context().is_valid and not _started_before(current, span):
            return ctx  # the caller opened a span inside the tool run: keep it
        return trace.set_span_in_context(span, ctx)


def _openinference_langchain_span() -> Span | None:
    # Only when the user already imported (and so may have enabled) the instrumentor: never import it.
    module = sys.modules.get("openinference.instrumentation.langchain")
    if module is None:
        return None
    try:
        if not module.LangChainInstrumentor().is_instrumented_by_opentelemetry:
            return None  # get_current_span() would print a complaint to stdout
        span = module.get_current_span()
    except Exception:  # another version's API: nesting is best effort, the action is not
        log.debug("openinference get_current_span() failed", exc_info=True)
        return None
    if span is None or not span.is_recording() or not span.get_span_context().is_valid:
        return None
    return cast(Span, span)


def _started_before(a: Span, b: Span) -> bool:
    """Whether span ``a`` started before ``b`` (an ancestor of the tool span, not a span inside it)."""
    sa, sb = getattr(a, "start_time", None), getattr(b, "start_time", None)
    if isinstance(sa, int) and isinstance(sb, int):
        return sa <= sb
    return False


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


# -- OTLP export ---------------------------------------------------------------------------------

_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
)


class _QuietWhileExporting(logging.Filter):
    """Drops the exporter's own records emitted inside our export call, on that thread only, and tells
    our exporter that an attempt failed (the OTLP exporter retries silently otherwise).

    Raising the exporter loggers' level instead would also silence exporters the application runs itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        exporter: _GuardedExporter | None = getattr(self.local, "exporter", None)
        if exporter is None:
            return True
        if record.levelno >= logging.WARNING:
            exporter.failing = True  # e.g. "Transient error ... retrying in 2.00s"
        return False


_QUIET = _QuietWhileExporting()
for _name in _EXPORTER_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET)


class _GuardedExporter(SpanExporter):
    """Wraps the OTLP exporter: a dead or slow collector yields one warning (and an info line when it
    is back), never an exception in the batch thread, never a log line per batch or retry."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.accepted = 0  # spans handed to the batch processor (counted by _CountingBatchSpanProcessor)
        self.queue_full = 0  # of those, dropped by the processor because its queue was full
        self.exported = 0
        self.failed = 0  # spans in batches whose export failed
        self.warned = False
        self.failing = False  # the last attempt failed (set as soon as a retry starts)
        self._abandoned = False
        self._lock = threading.Lock()

    def warn_once(self, message: str, *args: Any) -> None:
        with self._lock:
            if self.warned:
                return
            self.warned = True
        log.warning(message + " Actions are unaffected; the action log (agent-legs log) is complete.", *args)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._abandoned:
            with self._lock:
                self.failed += len(spans)
            return SpanExportResult.FAILURE
        _QUIET.local.exporter = self
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the batch thread
            result = SpanExportResult.FAILURE
        finally:
            _QUIET.local.exporter = None
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        if result is SpanExportResult.FAILURE:
            self.failing = True
            self.warn_once(
                "exporting spans to %s failed (collector down, too slow or refusing them); later failures are not reported.",
                self.endpoint,
            )
        elif self.failing:
            self.failing = False
            log.info("exporting spans to %s works again", self.endpoint)
        return result

    @property
    def dropped(self) -> int:
        """Spans known lost so far: queue full or export failed."""
        return self.queue_full + self.failed

    def dropped_at_close(self) -> int:
        """After the provider is stopped (or given up): every accepted span that was not exported."""
        return max(self.accepted - self.exported, self.dropped)

    def abandon(self) -> None:
        """Give up: later batches fail at once, and the exporter's retry back-off is interrupted."""
        self._abandoned = True
        with contextlib.suppress(Exception):
            self.inner.shutdown()

    def shutdown(self) -> None:
        if not self._abandoned:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _public_url(url: str) -> str:
    """The endpoint for a log message: without any user:password part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _resource(settings: TelemetrySettings) -> Resource:
    # OTEL_SERVICE_NAME and a service.name in OTEL_RESOURCE_ATTRIBUTES (both read by Resource.create)
    # win over the settings, as deployments set them; otherwise settings.telemetry.service_name.
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector

    env = OTELResourceDetector().detect()
    extra: dict[str, Any] = {"agent_legs.version": __version__}
    if not env.attributes.get(SERVICE_NAME):
        extra[SERVICE_NAME] = settings.service_name
    return Resource.create(extra)


def _traces_endpoint(settings: TelemetrySettings) -> str | None:
    """Where spans go, most specific first: the settings, the per-signal variable, the base variable."""
    if settings.otlp_endpoint:
        base = settings.otlp_endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"
    if url := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return url  # used as is, per the specification
    if url := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return url.rstrip("/") + "/v1/traces"
    return None


def _exporter_disabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return True
    exporters = {x.strip() for x in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")}
    return "otlp" not in exporters


def _default_provider(settings: TelemetrySettings) -> tuple[TracerProvider, _GuardedExporter | None]:
    """Our own provider (when the caller gives none): OTLP/HTTP protobuf through a batch processor.

    The batch processor queues spans in memory and exports from its own thread, so an action never
    waits for the collector; OTEL_BSP_* tune it, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS / _TIMEOUT /
    _COMPRESSION / _CERTIFICATE configure the exporter (read by the exporter itself).
    """
    endpoint = _traces_endpoint(settings)
    if endpoint is None or _exporter_disabled():
        # Nothing would ever read these spans: record none (ids and parenting stay valid for the
        # action log and results; attributes are never built), which saves ~40 us per call.
        return TracerProvider(resource=_resource(settings), sampler=ALWAYS_OFF), None
    # shutdown_on_exit=False: the SDK's atexit hook would wait on a stuck export at interpreter exit
    # (about 5 s more with a hung collector); close() (also run at exit for a Legs left open) is bounded.
    provider = TracerProvider(resource=_resource(settings), shutdown_on_exit=False)
    protocol = (
        (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        .strip()
        .lower()
    )
    if protocol != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; Agent Legs exports OTLP over HTTP/protobuf "
            "(use the collector's HTTP port, 4318)",
            protocol,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = _GuardedExporter(OTLPSpanExporter(endpoint=endpoint), _public_url(endpoint))
    provider.add_span_processor(_CountingBatchSpanProcessor(exporter))
    return provider, exporter


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it takes and those it drops because its queue is full
    (the SDK only logs "Queue full" per span, with no count anywhere)."""

    def __init__(self, exporter: _GuardedExporter) -> None:
        super().__init__(exporter)
        self._counts = exporter
        self._count_lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        inner = getattr(self, "_batch_processor", None)
        queue = getattr(inner, "_queue", None)
        full = queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen
        with self._count_lock:
            self._counts.accepted += 1
            if full:
                self._counts.queue_full += 1
        _QUEUE_FULL.local.inside = True  # the SDK's "Queue full" line per span: counted here instead
        try:
            super().on_end(span)
        finally:
            _QUEUE_FULL.local.inside = False


class _QuietQueueFull(logging.Filter):
    """Drops the SDK's per-span "Queue full" record, only when emitted inside our processor on this thread
    (an application's own processors keep theirs); our count is reported at close instead."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "inside", False)


_QUEUE_FULL = _QuietQueueFull()
logging.getLogger("opentelemetry.sdk._shared_internal").addFilter(_QUEUE_FULL)
