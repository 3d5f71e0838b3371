"""The action log's writer: ``actions.jsonl``, appended one whole JSON line per call, rotated by size.

Invariants (threat model: the host process may be SIGKILLed at any instruction, the disk may fill up,
the state dir may lose its permissions; several processes may share one state dir):

* every line is whole JSON: one ``write(2)`` per line on an ``O_APPEND`` descriptor, a short write
  rolled back with ``ftruncate``, a torn tail (a process killed inside a write) fenced off with a newline;
* rotation loses no line: writers rotate one at a time under an exclusive lock file, readers list and
  open the files under the shared one (``_rotation_lock``), a writer whose file was rotated by another
  process reopens the new one before its next line (the rotator bumps a generation counter kept in the
  lock file, which every writer maps into memory: one memory read per line instead of a ``stat``);
* no system call per line besides the one ``write(2)``: the size that triggers rotation is counted,
  not ``fstat``-ed (the file's real size, which other processes' lines grow too, is read once every
  ``_RESYNC_LINES`` lines and whenever the count reaches the limit);
* failures to write are classified (``describe_os_error``: disk full, permission denied, too many open
  files...) and raised as ``ActionLogError``, never as a bare traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._records import dumps

__all__ = [
    "ActionLog",
    "ActionLogError",
    "append_whole",
    "complete_short_write",
    "describe_os_error",
    "encode_line",
    "ends_with_newline",
    "file_ino",
    "json_text",
    "log_files",
    "rotation_lock",
]


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


# One encoder for every line (``json.dumps`` with options builds a new one per call).
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode


try:  # about 0.5 us a line instead of 4.5 (a dependency on CPython; the stdlib encoder is the fallback)
    import orjson as _orjson
except ImportError:  # pragma: no cover - PyPy, or an install without it
    _orjson = None  # type: ignore[assignment]
# Types orjson would write its own way are handed to ``default=str``, as the stdlib encoder does.
_JSON_OPTIONS = (
    (_orjson.OPT_NON_STR_KEYS | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS)
    if _orjson is not None
    else 0
)
_ORJSON_OPTIONS = (_JSON_OPTIONS | _orjson.OPT_APPEND_NEWLINE) if _orjson is not None else 0
# Without ``OPT_NON_STR_KEYS`` first: orjson's path for a dict whose keys are all exactly ``str`` (every line
# but one with such keys in its arguments) is a third cheaper; any other key makes it raise, and the
# line is encoded again with the option, which writes text keys the same way.
_STR_KEYS_OPTIONS = _ORJSON_OPTIONS & ~_orjson.OPT_NON_STR_KEYS if _orjson is not None else 0
_STR_KEYS_JSON_OPTIONS = _JSON_OPTIONS & ~_orjson.OPT_NON_STR_KEYS if _orjson is not None else 0
_fast = _orjson is not None  # tests switch it off to check the fallback writes the same lines


def encode_line(entry: dict[str, Any]) -> bytes:
    """One JSON line as the log keeps it (compact, UTF-8, anything unknown as its ``str``).

    orjson when installed; what it refuses (a lone surrogate, an integer beyond 64 bits) goes to the
    stdlib encoder, which escapes a lone surrogate instead of costing the line. Both write the same
    JSON values, except a float that is not finite: orjson writes ``null`` (valid JSON), the stdlib ``NaN``.
    """
    if _fast:
        try:
            return _orjson.dumps(entry, default=str, option=_STR_KEYS_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError: a key that is not a str, or what follows
            try:
                return _orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS)
            except TypeError:
                pass
    return (_ENCODE(entry) + "\n").encode("utf-8", "backslashreplace")


def json_text(obj: Any) -> str:
    """``obj`` as a span attribute's JSON (non-ASCII kept, anything unknown as its ``str``, as ``dumps``):
    orjson's compact form, or ``dumps`` for what orjson refuses (a lone surrogate, an integer beyond 64 bits)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, default=str, option=_STR_KEYS_JSON_OPTIONS).decode()
        except TypeError:  # orjson.JSONEncodeError is a TypeError: a key that is not a str, or what follows
            try:
                return _orjson.dumps(obj, default=str, option=_JSON_OPTIONS).decode()
            except TypeError:
                pass
    return dumps(obj)


_RESYNC_LINES = 64  # the real size of the file is read once per this many lines (others' lines count too)
_GENERATION_BYTES = 8  # the rotation counter at the start of the lock file

_TAIL_SETTLE_TRIES = 5  # checks of a log tail without a newline before it is taken for a torn line


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` with one ``write(2)`` on an ``O_APPEND`` descriptor, or leave the file as it was.

    A regular file only takes part of a write when the disk fills up, a size limit is reached or the
    process is killed in the middle of a large write. On a short write the rest is tried once (which
    either completes the line in place or tells the real reason: ENOSPC, EFBIG, EDQUOT); a line that
    is still incomplete is cut off again with ``ftruncate`` (when nobody appended after it), so the
    file never keeps a fragment that the next line would be glued to.
    """
    n = os.write(fd, data)
    if n != len(data):
        complete_short_write(fd, data, n)


def complete_short_write(fd: int, data: bytes, n: int) -> None:
    """``append_whole`` after its ``write(2)`` took only the first ``n`` bytes of ``data``: the rest, or the
    file as it was (callers inline the first ``write(2)`` and call this only when it was short)."""
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


def ends_with_newline(fd: int) -> bool:
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
        self._size = 0  # the file's size as last read, plus the lines written since
        self._unsynced = 0  # lines written since the size was last read
        self._generation: mmap.mmap | None = None  # the rotation counter, shared by every writer
        self._seen = b""  # the counter's value when our file was opened
        self._guard = False  # the file ends inside a line: start the next one with a newline
        with contextlib.suppress(OSError):  # a log that cannot be opened now fails the first action instead
            self._open()

    def _open(self) -> None:
        if self._generation is None:
            self._generation = _map_generation(self.path)
        seen = self._generation[:_GENERATION_BYTES] if self._generation is not None else b""
        # 0o600: the log holds (redacted) arguments of every call; it is nobody else's business.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            self._guard = not ends_with_newline(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._ino, self._size, self._unsynced, self._seen = fd, st.st_ino, st.st_size, 0, seen

    def write(self, entry: dict[str, Any]) -> None:
        self.write_line(encode_line(entry))

    def write_line(self, data: bytes) -> None:
        """Append one encoded line (``encode_line``): whole, or not at all (``ActionLogError``)."""
        lock = self._lock  # acquire/release, not ``with``: no bound ``__exit__`` allocated per line
        try:
            lock.acquire()
            try:
                self._write(data)
            finally:
                lock.release()
        except OSError as exc:
            raise exc if isinstance(exc, ActionLogError) else ActionLogError(exc, f"{self.path}") from None

    def _rotated_elsewhere(self) -> bool:
        generation = self._generation
        if generation is not None:
            return generation[:_GENERATION_BYTES] != self._seen
        return file_ino(self.path) != self._ino  # no shared counter (no fcntl, or no lock file): stat per line

    def _write(self, data: bytes) -> None:
        if self._fd is not None and self._rotated_elsewhere():  # rotated (or removed) by someone else
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            self._open()
        assert self._fd is not None
        if self._guard:
            append_whole(self._fd, b"\n")
            self._size += 1
            self._guard = False
        try:
            append_whole(self._fd, data)
        except OSError:
            with contextlib.suppress(OSError):  # a rollback that could not happen: guard the next line
                self._guard = not ends_with_newline(self._fd)
            raise
        self._size += len(data)
        self._unsynced += 1
        if self._unsynced >= _RESYNC_LINES or self._size >= self.max_bytes:
            self._size, self._unsynced = os.fstat(self._fd).st_size, 0  # other processes' lines too
            if self._size >= self.max_bytes:
                self._rotate()
            elif file_ino(self.path) != self._ino:  # removed or replaced by hand: the next line goes to a new file
                os.close(self._fd)
                self._fd = None

    def _rotate(self) -> None:
        assert self._fd is not None
        # Processes sharing the log rotate one at a time (two shifting .1 -> .2 -> ... at once would
        # overwrite each other's backups); the one that comes second finds the work done.
        with rotation_lock(self.path):
            if file_ino(self.path) == self._ino and os.fstat(self._fd).st_size >= self.max_bytes:
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                if self.backups > 0:
                    os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
                else:
                    self.path.unlink(missing_ok=True)
                if self._generation is not None:  # every other writer reopens before its next line
                    count = int.from_bytes(self._generation[:_GENERATION_BYTES], "little") + 1
                    self._generation[:_GENERATION_BYTES] = (count % 2**64).to_bytes(_GENERATION_BYTES, "little")
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
            if self._generation is not None:
                self._generation.close()
                self._generation = None


def _map_generation(path: Path) -> mmap.mmap | None:
    """The rotation counter of ``path`` (the first bytes of its lock file), mapped shared; ``None`` where
    there is no ``fcntl`` (one process per state dir is assumed there) or the lock file cannot be made."""
    try:
        import fcntl  # noqa: F401 - only where rotation_lock really locks
    except ImportError:
        return None
    try:
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < _GENERATION_BYTES:
            os.ftruncate(fd, _GENERATION_BYTES)  # zeros; a rotator that got there first keeps its count
        return mmap.mmap(fd, _GENERATION_BYTES)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)  # the mapping stays valid


@contextlib.contextmanager
def rotation_lock(path: Path, shared: bool = False) -> Iterator[None]:
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


def file_ino(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None
