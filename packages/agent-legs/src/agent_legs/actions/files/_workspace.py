"""The workspace: the one place that touches the agent's files on disk.

Every path an action names is normalised and checked here, then reached by walking from the
workspace root one component at a time with directory file descriptors and ``O_NOFOLLOW``: a
symlink anywhere on the way (even one swapped in between a check and the use) is refused by the
kernel, so nothing outside the root can be reached. Every directory on the way is compared (device,
inode) with the state directory, which stays unreachable even if it shows up inside the workspace
(bind mount, rename). Files are opened ``O_NONBLOCK`` and checked with ``fstat`` on the open
descriptor, so FIFOs, devices and sockets are refused without blocking.

Hard links: a regular file with more than one link is refused for reading (it may alias a file
outside the workspace, e.g. a secret the operator hard-linked in; we cannot tell where the other
names are). Overwriting one replaces the name (rename), so the other names never change.
Limitation: package managers that hard-link from a cache (uv, pnpm) produce such files.

Writes are atomic (temp file, fdatasync, rename, directory fsync); deletes are moves into
``<state_dir>/trash/<timestamp>-<id>/`` with a manifest, so the operator can ``restore`` them.
"""

from __future__ import annotations

import codecs
import errno
import functools
import hashlib
import inspect
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from ... import _acl
from ..._errors import ActionError
from ..._matching import DenyList, glob_to_regex, path_matcher
from ..._models import Artifact
from ..._policy import FilesPolicy

__all__ = [
    "Cancel",
    "CopyResult",
    "DenyList",
    "Entry",
    "SweepResult",
    "Workspace",
    "decode_text",
    "glob_to_regex",
    "guess_mime",
    "path_matcher",
    "resource_error",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_PREFIX = ".agent-legs-tmp-"
# Our temporary names: <prefix><owner tag>-<pid>-<random>. The tag names the pid namespace (host
# name + pid namespace inode), so a sweep judges "is the owner alive?" only for processes it can
# see; other temporary names (older versions, other hosts or containers) only by age.
_TMP_NAME = re.compile(r"\A\.agent-legs-tmp-(?:([0-9a-f]{8})-(\d+)-)?[0-9a-f]{12}\Z")
_SWEEP_GRACE_S = 3600.0
_SWEEP_MAX_ENTRIES = 1_000_000
_MAX_PATH_BYTES = 4096
_TRASH_ID = re.compile(r"\A\d{8}T\d{6}-[0-9a-f]{8}\Z")
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PATH_HINT = "Paths are relative to the workspace, e.g. 'reports/summary.txt'."
_CONFINED = "workspace confinement"
# fdatasync flushes the data and the size (what a reader needs); the rename is made durable by the
# directory fsync. Not every platform has it.
_datasync = getattr(os, "fdatasync", os.fsync)

WriteMode = Literal["overwrite", "append", "create"]
Kind = Literal["file", "dir", "symlink", "other"]


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    kind: Kind
    size: int
    mtime: float


@dataclass(slots=True)
class CopyResult:
    artifacts: list[Artifact] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Paths left out: symbolic links, special files, hard-linked files."""
    denied: dict[str, int] = field(default_factory=dict)
    """Entries left out because ``policy.files.deny`` denies them at the source or would at the
    destination: count per pattern (names are not shown: they stay as hidden as in files.list)."""


class _ExistsError(ActionError):
    """The target of a no-clobber write exists (``save_unique`` tries the next name)."""


log = logging.getLogger("agent_legs")
_F = TypeVar("_F", bound=Callable[..., Any])
_DISK_FULL_HINT = (
    "Free space in the workspace (delete files that are no longer needed) or ask the operator "
    "for more; repeating the call will fail the same way until then."
)


def resource_error(exc: OSError, verb: str, rel: str | None = None, *, disk: str = "the workspace's disk") -> ActionError | None:
    """A typed error for a file-system resource failure (disk full, permissions, file too large,
    out of file descriptors, read-only file system, I/O error), or None for other errors.

    These are conditions of the host, not bugs: the model gets a clear message and a hint, the
    log no traceback. Messages never claim nothing changed: the caller knows that, this does not."""
    what = f"cannot {verb}" + (f" {rel!r}" if rel else "")
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = f"{disk} is full" if code == errno.ENOSPC else f"{disk} quota is used up"
        return ActionError("failed", f"{what}: {why} ({errno.errorcode[code]})", hint=_DISK_FULL_HINT)
    if code in (errno.EACCES, errno.EPERM):
        return ActionError(
            "denied",
            f"{what}: the file system's permissions forbid it ({errno.errorcode[code]})",
            rule="file system permissions",
            hint="The operator's file permissions protect this path; use another one.",
        )
    if code == errno.EFBIG:
        return ActionError(
            "failed",
            f"{what}: the file is too large for the workspace's file system (EFBIG)",
            hint="Write smaller files (split the content).",
        )
    if code in (errno.EMFILE, errno.ENFILE):
        return ActionError(
            "unavailable",
            f"{what}: too many open files on the host ({errno.errorcode[code]})",
            retryable=True,
            hint="A temporary shortage of the host; try again shortly.",
        )
    if code == errno.EROFS:
        return ActionError(
            "failed",
            f"{what}: the workspace's file system is mounted read-only (EROFS)",
            hint="Only reading is possible; ask the operator if writing is needed.",
        )
    if code == errno.EIO:
        return ActionError(
            "failed",
            f"{what}: an I/O error on the workspace's disk (EIO)",
            hint="The disk reports errors; ask the operator to check it.",
        )
    if code == errno.ENAMETOOLONG:
        return ActionError("invalid_input", f"{what}: a name is too long for the workspace's file system")
    return None


def _classified(verb: str) -> Callable[[_F], _F]:
    """Turn resource ``OSError``s of a public method (or generator) into typed ``ActionError``s."""

    def deco(fn: _F) -> _F:
        def convert(exc: OSError, args: tuple[Any, ...]) -> BaseException:
            rel = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            return resource_error(exc, verb, rel) or exc

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from fn(*args, **kwargs)
                except OSError as exc:
                    converted = convert(exc, args)
                    if converted is exc:
                        raise
                    raise converted from None

            return gen  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                converted = convert(exc, args)
                if converted is exc:
                    raise
                raise converted from None

        return wrapper  # type: ignore[return-value]

    return deco


def _denied(message: str, rule: str) -> ActionError:
    return ActionError("denied", message, rule=rule)


def _cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise ActionError("timeout", "the operation was stopped", retryable=True)


class Cancel(threading.Event):
    """A cancel flag with a commit point, for a tree operation run in a worker thread.

    The worker calls ``commit()`` right before its one visible step (the final rename); the
    waiting side calls ``cancel()`` when its deadline passes, which says whether the commit had
    already happened. So a stopped call knows whether its effect may have taken place, and never
    calls "stopped, retry" an operation that completed behind its back."""

    def __init__(self) -> None:
        super().__init__()
        self._commit_lock = threading.Lock()
        self.committed = False

    def commit(self) -> None:
        with self._commit_lock:
            _cancelled(self)
            self.committed = True

    def cancel(self) -> bool:
        """Stop the worker; True if it had already committed (its effect may be in place)."""
        with self._commit_lock:
            self.set()
            return self.committed


def _commit(cancel: threading.Event | None) -> None:
    if isinstance(cancel, Cancel):
        cancel.commit()
    else:
        _cancelled(cancel)


def _after_commit(rel: str, done: str, exc: OSError) -> ActionError:
    """The change was made (rename done) but could not be made durable: say so, never "retry"."""
    return ActionError(
        "failed",
        f"{rel!r} was {done}, but the directory could not be flushed to disk "
        f"({exc.strerror}): the change is in place now but may not survive a crash of the host",
        hint="Check the result (files_read / files_list) before repeating the call.",
    )


class Workspace:
    """Safe filesystem operations confined to ``root``. Thread-safe (no mutable state)."""

    def __init__(self, root: Path, policy: FilesPolicy, state_dir: Path) -> None:
        self.root = Path(root).resolve()
        self.policy = policy
        self.state_dir = Path(state_dir).resolve()
        self.deny = DenyList(policy.deny)

    # -- path checks ---------------------------------------------------------------------------
    def check(self, path: str, *, write: bool = False) -> str:
        """Normalise a model-given path to ``a/b.txt`` (``.`` for the root) or raise.

        Raises ``ActionError('denied', ..., rule=...)`` for escapes, denied globs and writes to a
        read-only workspace, ``ActionError('invalid_input', ...)`` for malformed paths. Symlinks,
        special files and the state directory are refused when the path is used.
        """
        parts, _ = self._parse(path)
        rel = "/".join(parts) or "."
        if write and self.policy.read_only:
            raise _denied(f"cannot modify {rel!r}: the workspace is read-only", "policy.files.read_only")
        return rel

    def _parse(self, path: str, *, deny: bool = True) -> tuple[list[str], bool]:
        """Components of a workspace path and whether it ended with '/' (names a directory)."""
        if not isinstance(path, str):
            raise ActionError("invalid_input", "path must be a string")
        if _BAD_CHARS.search(path):
            if "\x00" in path:
                raise ActionError("invalid_input", "path contains a NUL byte")
            if _SURROGATE.search(path):
                raise ActionError("invalid_input", "path is not valid Unicode (lone surrogate)")
            raise ActionError("invalid_input", "path contains control characters")
        raw = path.strip()
        if "\\" in raw:
            raise ActionError("invalid_input", f"use '/' as the path separator, not '\\\\': {path!r}", hint=_PATH_HINT)
        if re.match(r"[A-Za-z]:", raw):
            raise ActionError("invalid_input", f"drive-letter paths are not workspace paths: {path!r}", hint=_PATH_HINT)
        if raw.startswith("~"):
            raise _denied(f"{path!r} points outside the workspace (home directory)", _CONFINED)
        if raw.startswith("/"):
            root = str(self.root)
            if raw == root or raw.startswith(root + "/"):
                raw = raw[len(root) :]
            else:
                raise _denied(f"{path!r} is outside the workspace", _CONFINED)
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _denied(f"{path!r} escapes the workspace ('..' is not allowed)", _CONFINED)
        rel = "/".join(parts)
        if len(rel.encode()) > _MAX_PATH_BYTES:
            raise ActionError("invalid_input", f"path is longer than {_MAX_PATH_BYTES} bytes")
        if len(rel) > 63 and any(len(part.encode()) > 255 for part in parts):  # 63 chars: at most 252 bytes
            raise ActionError("invalid_input", "a path component is longer than 255 bytes")
        low = rel.lower()
        if low.startswith(_TMP_PREFIX) or f"/{_TMP_PREFIX}" in low:
            raise _denied(f"{path!r} is an Agent Legs temporary file", _CONFINED)
        if deny and (pattern := self.deny.rule(rel)) is not None:
            raise _denied(f"{rel!r} matches a denied pattern", f"policy.files.deny[{pattern!r}]")
        return parts, bool(parts) and raw.endswith(("/", "/."))

    def _file_parts(self, path: str) -> tuple[list[str], str]:
        """Components of a path that must name a file (not the root, no trailing slash)."""
        parts, trailing = self._parse(path)
        if not parts:
            raise ActionError("invalid_input", "the workspace root is a directory, not a file")
        rel = "/".join(parts)
        if trailing:
            raise ActionError("invalid_input", f"{path!r} ends with '/', so it names a directory, not a file")
        return parts, rel

    def is_denied(self, rel: str) -> bool:
        """Whether a relative path is refused by the checks (deny globs, temp names...)."""
        try:
            self._parse(rel)
        except ActionError:
            return True
        return False

    def denied_rule(self, path: str) -> str | None:
        """The ``policy.files.deny`` pattern that denies a workspace path (relative or absolute
        inside the root), or None. The single check for every family (e.g. the sandbox's masks)."""
        parts, _ = self._parse(path, deny=False)
        return self.deny.rule("/".join(parts))

    @_classified("list")
    def denied_paths(self, path: str = ".", *, cancel: threading.Event | None = None) -> Iterator[tuple[str, str]]:
        """``(relative path, pattern)`` of every existing denied entry under ``path`` (a denied
        directory is reported, not entered). Symbolic links are reported by their own name and
        never followed; the state directory is skipped."""
        parts, _ = self._parse(path)
        with self._dir(parts) as dfd:
            yield from self._denied_under(dfd, parts, self._state_id(), cancel)

    def _denied_under(
        self, dfd: int, parts: list[str], state: tuple[int, int] | None, cancel: threading.Event | None
    ) -> Iterator[tuple[str, str]]:
        _cancelled(cancel)
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            if _is_temp(item.name):
                continue
            rel = "/".join([*parts, item.name])
            if (pattern := self.deny.rule(rel)) is not None:
                yield rel, pattern
                continue
            if item.is_dir(follow_symlinks=False):
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None:
                        yield from self._denied_under(sub, [*parts, item.name], state, cancel)

    # -- temporary files ------------------------------------------------------------------------
    def sweep_temp(self, *, grace_s: float = _SWEEP_GRACE_S, max_entries: int = _SWEEP_MAX_ENTRIES) -> SweepResult:
        """Remove temporary files and directories that interrupted writes and copies left behind
        (a killed process): only names of our own pattern, and only when their owner process is
        provably gone (same pid namespace, pid not alive) or they are older than ``grace_s``.
        Walks the workspace with directory descriptors (no symlink followed, the state directory
        skipped), at most ``max_entries`` entries. Errors are skipped, never raised."""
        result = SweepResult()
        budget = [max_entries]
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError:
            return result
        try:
            self._sweep(fd, "", self._state_id(), time.time(), grace_s, budget, result)
        finally:
            os.close(fd)
        return result

    def _sweep(
        self,
        dfd: int,
        rel: str,
        state: tuple[int, int] | None,
        now: float,
        grace_s: float,
        budget: list[int],
        result: SweepResult,
    ) -> None:
        try:
            with os.scandir(dfd) as it:
                items = list(it)
        except OSError:
            return
        for item in items:
            budget[0] -= 1
            if budget[0] < 0:
                result.complete = False
                return
            path = f"{rel}/{item.name}" if rel else item.name
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if item.name.startswith(_TMP_PREFIX):
                if _stale(item.name, st.st_mtime, now, grace_s):
                    try:
                        if stat.S_ISDIR(st.st_mode):
                            size = _tree_size(dfd, item.name)
                            shutil.rmtree(item.name, dir_fd=dfd)
                        else:
                            size = st.st_size
                            os.unlink(item.name, dir_fd=dfd)
                    except OSError:
                        continue
                    result.removed.append(path)
                    result.bytes += size
                continue
            if stat.S_ISDIR(st.st_mode):
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None:
                        self._sweep(sub, path, state, now, grace_s, budget, result)

    def start_sweep(self) -> threading.Thread:
        """``sweep_temp`` in a background thread (the first use of a workspace must not wait for a
        walk of a large tree); its result is logged. ``join()`` the thread to wait for it."""

        def run() -> None:
            try:
                result = self.sweep_temp()
            except Exception:  # never let housekeeping disturb the agent
                log.warning("sweeping temporary files in %s failed", self.root, exc_info=True)
                return
            if result.removed:
                log.warning(
                    "removed %d temporary file(s) (%d bytes) that interrupted writes left in %s",
                    len(result.removed),
                    result.bytes,
                    self.root,
                )

        thread = threading.Thread(target=run, name="agent-legs-sweep", daemon=True)
        thread.start()
        return thread

    # -- fd walking ----------------------------------------------------------------------------
    def _state_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.state_dir)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _not_state(self, st: os.stat_result | None) -> None:
        """Refuse to move or delete the state directory itself (if it ever appears inside)."""
        if st is not None and stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == self._state_id():
            raise _denied("the state directory is never reachable", f"{_CONFINED} (state dir)")

    def _guard(self, fd: int, state: tuple[int, int] | None) -> None:
        if state is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == state:
                raise _denied("the state directory is never reachable", f"{_CONFINED} (state dir)")

    @contextmanager
    def _dir(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """An fd of the directory ``parts`` (from the root, never following a symlink)."""
        # The root itself is never the state dir (Legs refuses that); stat the state dir only when
        # there is a directory below the root to compare (saves two syscalls on top-level files).
        state = self._state_id() if parts else None
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ActionError(
                            "not_found",
                            f"directory {'/'.join(parts[: i + 1])!r} does not exist",
                            hint="Use files_list to see what exists.",
                        ) from None
                    with suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                        _inherit_owner(fd, name=name)
                    try:
                        nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        raise self._walk_error(fd, name, "/".join(parts[: i + 1]), exc) from None
                except OSError as exc:
                    raise self._walk_error(fd, name, "/".join(parts[: i + 1]), exc) from None
                os.close(fd)
                fd = nfd
                self._guard(fd, state)
            yield fd
        finally:
            os.close(fd)

    def _walk_error(self, dir_fd: int, name: str, rel: str, exc: OSError) -> ActionError:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError:
            return resource_error(exc, "open", rel) or ActionError("failed", f"cannot open {rel!r}: {exc.strerror}")
        if stat.S_ISLNK(st.st_mode):
            return _denied(f"{rel!r} is a symbolic link; links are not followed", f"{_CONFINED} (symlink)")
        if exc.errno == errno.ENOTDIR or not stat.S_ISDIR(st.st_mode):
            return ActionError("invalid_input", f"{rel!r} is not a directory")
        return resource_error(exc, "open", rel) or ActionError("failed", f"cannot open {rel!r}: {exc.strerror}")

    def _open_file(self, dir_fd: int, name: str, rel: str, flags: int = os.O_RDONLY) -> int:
        """Open a regular, singly-linked file in ``dir_fd`` (no symlink, FIFO, device, socket)."""
        return self._open_file_stat(dir_fd, name, rel, flags)[0]

    def _open_file_stat(self, dir_fd: int, name: str, rel: str, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result]:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ActionError("not_found", f"{rel!r} does not exist", hint="Use files_list to see what exists.") from None
        except IsADirectoryError:
            raise ActionError("invalid_input", f"{rel!r} is a directory", hint="Use files_list to see its contents.") from None
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO without a reader (write side)
                raise _denied(f"{rel!r} is not a regular file (FIFO)", f"{_CONFINED} (special file)") from None
            raise self._walk_error(dir_fd, name, rel, exc) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ActionError("invalid_input", f"{rel!r} is a directory", hint="Use files_list to see its contents.")
            if not stat.S_ISREG(st.st_mode):
                raise _denied(f"{rel!r} is not a regular file (device, FIFO or socket)", f"{_CONFINED} (special file)")
            if st.st_nlink > 1:
                raise _denied(
                    f"{rel!r} is hard-linked elsewhere and could alias a file outside the workspace", f"{_CONFINED} (hard link)"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    # -- reading -------------------------------------------------------------------------------
    def read_bytes(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The whole file; ``invalid_input`` if it is larger than ``max_bytes``
        (default ``policy.files.max_read_bytes``)."""
        limit = self.policy.max_read_bytes if max_bytes is None else max_bytes
        data, size = self.read_head(path, limit)
        if len(data) < size:
            raise ActionError("invalid_input", f"{self.check(path)!r} is {size} bytes, over the limit of {limit} bytes")
        return data

    def read_head(self, path: str, max_bytes: int) -> tuple[bytes, int]:
        """Up to ``max_bytes`` from the start of the file, and its full size."""
        _, data, size = self.read_file(path, max_bytes)
        return data, size

    @_classified("read")
    def read_file(self, path: str, max_bytes: int) -> tuple[str, bytes, int]:
        """``(normalised path, up to max_bytes from the start, full size)`` in one check and walk."""
        parts, rel = self._file_parts(path)
        with self._dir(parts[:-1]) as dfd:
            fd, st = self._open_file_stat(dfd, parts[-1], rel)
        try:
            data, size = _read_fd(fd, max_bytes, st.st_size)
        finally:
            os.close(fd)
        return rel, data, size

    @_classified("open")
    def open_read(self, path: str) -> BinaryIO:
        """A binary file object for streaming (attachments). The caller closes it."""
        parts, rel = self._file_parts(path)
        with self._dir(parts[:-1]) as dfd:
            fd = self._open_file(dfd, parts[-1], rel)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    @_classified("inspect")
    def stat(self, path: str) -> Entry:
        """What ``path`` is (a symlink is reported as such, never followed)."""
        parts, trailing = self._parse(path)
        rel = "/".join(parts) or "."
        with self._dir(parts[:-1]) as dfd:
            if not parts:
                return Entry(".", "dir", 0, os.fstat(dfd).st_mtime)
            st = _lstat(dfd, parts[-1])
        if st is None:
            raise ActionError("not_found", f"{rel!r} does not exist", hint="Use files_list to see what exists.")
        kind = _kind(st.st_mode)
        if trailing and kind == "file":
            raise ActionError("invalid_input", f"{path!r} ends with '/' but {rel!r} is a file")
        return Entry(rel, kind, st.st_size if kind == "file" else 0, st.st_mtime)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except ActionError as exc:
            if exc.type == "not_found":
                return False
            raise
        return True

    def artifact(self, path: str) -> Artifact:
        """An ``Artifact`` (path, mime type, size) for an existing file."""
        entry = self.stat(path)
        return Artifact(path=entry.path, mime_type=guess_mime(entry.path), size=entry.size)

    @_classified("list")
    def iter_entries(self, path: str = ".", *, recursive: bool = False, cancel: threading.Event | None = None) -> Iterator[Entry]:
        """Entries under a directory, sorted (symlinks listed, never followed; denied paths and
        the state directory hidden)."""
        parts, _ = self._parse(path)
        with self._dir(parts) as dfd:
            yield from self._scan(dfd, parts, recursive, self._state_id(), cancel)

    def _scan(
        self,
        dfd: int,
        parts: list[str],
        recursive: bool,
        state: tuple[int, int] | None,
        cancel: threading.Event | None,
    ) -> Iterator[Entry]:
        _cancelled(cancel)
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            rel = "/".join([*parts, item.name])
            if _is_temp(item.name) or self.is_denied(rel):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            kind = _kind(st.st_mode)
            if kind == "dir" and state is not None and (st.st_dev, st.st_ino) == state:
                continue
            yield Entry(rel, kind, st.st_size if kind == "file" else 0, st.st_mtime)
            if recursive and kind == "dir":
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None:
                        yield from self._scan(sub, [*parts, item.name], True, state, cancel)

    @contextmanager
    def _subdir(self, dfd: int, name: str, state: tuple[int, int] | None) -> Iterator[int | None]:
        """An fd of a child directory, or None if it vanished, became a link or is the state dir."""
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        except OSError:
            yield None
            return
        try:
            try:
                self._guard(sub, state)
            except ActionError:
                yield None
                return
            yield sub
        finally:
            os.close(sub)

    @_classified("read")
    def iter_files(
        self, path: str, max_bytes: int, *, match: Callable[[str], bool] | None = None, cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, bytes, int]]:
        """``(relative path, first max_bytes, size)`` of every readable regular file under ``path``
        (or of ``path`` itself), skipping what cannot be read (links, special, hard-linked, denied)."""
        parts, _ = self._parse(path)
        entry = self.stat(path)
        if entry.kind == "symlink":
            raise _denied(f"{entry.path!r} is a symbolic link; links are not followed", f"{_CONFINED} (symlink)")
        if entry.kind == "file":
            if match is None or match(entry.path):
                data, size = self.read_head(entry.path, max_bytes)
                yield entry.path, data, size
            return
        if entry.kind != "dir":
            raise _denied(f"{entry.path!r} is not a regular file", f"{_CONFINED} (special file)")
        with self._dir(parts) as dfd:
            yield from self._scan_files(dfd, parts, max_bytes, match, self._state_id(), cancel)

    def _scan_files(
        self,
        dfd: int,
        parts: list[str],
        max_bytes: int,
        match: Callable[[str], bool] | None,
        state: tuple[int, int] | None,
        cancel: threading.Event | None,
    ) -> Iterator[tuple[str, bytes, int]]:
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            _cancelled(cancel)
            rel = "/".join([*parts, item.name])
            if _is_temp(item.name) or self.is_denied(rel):
                continue
            if item.is_dir(follow_symlinks=False):
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None:
                        yield from self._scan_files(sub, [*parts, item.name], max_bytes, match, state, cancel)
            elif item.is_file(follow_symlinks=False) and (match is None or match(rel)):
                try:
                    fd = self._open_file(dfd, item.name, rel)
                except ActionError:
                    continue
                try:
                    data, size = _read_fd(fd, max_bytes)
                finally:
                    os.close(fd)
                yield rel, data, size

    # -- writing -------------------------------------------------------------------------------
    @_classified("write")
    def write_bytes(self, path: str, data: bytes, *, mode: WriteMode = "overwrite", max_bytes: int | None = None) -> Artifact:
        """Atomically write (temp file + fdatasync + rename + directory fsync), creating parent
        directories. ``create`` fails if the file exists (atomically: link(2), no clobbering);
        ``max_bytes`` defaults to ``policy.files.max_write_bytes``."""
        rel = self.check(path, write=True)
        parts, rel = self._file_parts(path)
        limit = self.policy.max_write_bytes if max_bytes is None else max_bytes
        if len(data) > limit:
            raise ActionError(
                "invalid_input",
                f"{len(data)} bytes is over the write limit of {limit} bytes (policy.files.max_write_bytes)",
                rule="policy.files.max_write_bytes",
            )
        name = parts[-1]
        with self._dir(parts[:-1], create=True) as dfd:
            existing = _lstat(dfd, name)
            file_mode = 0o644
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    raise _denied(f"{rel!r} is a symbolic link; links are not written through", f"{_CONFINED} (symlink)")
                if stat.S_ISDIR(existing.st_mode):
                    raise ActionError("invalid_input", f"{rel!r} is a directory")
                if not stat.S_ISREG(existing.st_mode):
                    raise _denied(f"{rel!r} is not a regular file", f"{_CONFINED} (special file)")
                if mode == "create":
                    raise _ExistsError(
                        "invalid_input",
                        f"{rel!r} already exists",
                        hint="Use mode='overwrite' to replace it or 'append' to add to it.",
                    )
                file_mode = stat.S_IMODE(existing.st_mode)
                if mode == "append":
                    fd = self._open_file(dfd, name, rel)
                    try:
                        old, _ = _read_fd(fd, limit + 1)
                    finally:
                        os.close(fd)
                    data = old + data
                    if len(data) > limit:
                        raise ActionError(
                            "invalid_input",
                            f"appending would make {rel!r} {len(data)} bytes, over "
                            f"the limit of {limit} (policy.files.max_write_bytes)",
                            rule="policy.files.max_write_bytes",
                        )
            try:
                tmp = self._write_temp(dfd, data, file_mode)
            except OSError as exc:  # the temp file is gone again: the target is untouched
                error = resource_error(exc, "write", rel)
                if error is None:
                    raise
                error.message += f"; {rel!r} is unchanged" if existing is not None else f"; {rel!r} was not created"
                raise error from None
            try:
                if mode == "create":
                    try:
                        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except FileExistsError:
                        raise _ExistsError("invalid_input", f"{rel!r} already exists") from None
                    finally:
                        _unlink_quiet(dfd, tmp)
                else:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quiet(dfd, tmp)
                raise
            try:
                os.fsync(dfd)
            except OSError as exc:
                raise _after_commit(rel, "written", exc) from None
        return Artifact(path=rel, mime_type=guess_mime(rel), size=len(data))

    def _write_temp(self, dfd: int, data: bytes, file_mode: int) -> str:
        tmp = _temp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode, dir_fd=dfd)
        try:
            _inherit_owner(dfd, fd=fd)
            _write_all(fd, data)
            _datasync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(dfd, tmp)
            raise
        os.close(fd)
        return tmp

    def save_unique(self, path: str, data: bytes, *, max_bytes: int | None = None) -> Artifact:
        """Write to ``path`` or, if taken, ``stem-1.ext``, ``stem-2.ext``... (never overwrites)."""
        rel = self.check(path, write=True)
        head, _, base = rel.rpartition("/")
        stem, dot, ext = base.partition(".") if not base.startswith(".") else (base, "", "")
        if not stem:
            stem, dot, ext = base, "", ""
        prefix = f"{head}/" if head else ""
        for i in range(10_000):
            candidate = rel if i == 0 else f"{prefix}{stem}-{i}{dot}{ext}"
            try:
                return self.write_bytes(candidate, data, mode="create", max_bytes=max_bytes)
            except _ExistsError:
                continue
        raise ActionError("failed", f"no free name for {rel!r}")

    @_classified("create the directory")
    def mkdir(self, path: str) -> str:
        """Create a directory (and its parents); no error if it exists."""
        rel = self.check(path, write=True)
        parts, _ = self._parse(rel)
        with self._dir(parts, create=True):
            pass
        return rel

    @_classified("move")
    def move(self, source: str, destination: str, *, overwrite: bool = False) -> str:
        """Rename within the workspace. A replaced destination goes to the trash (recoverable)."""
        self.check(source, write=True)
        self.check(destination, write=True)
        (sp, st_), (dp, dt) = self._parse(source), self._parse(destination)
        src, dst = "/".join(sp), "/".join(dp)
        if not sp or not dp:
            raise ActionError("invalid_input", "cannot move the workspace root")
        if dp[: len(sp)] == sp and len(dp) > len(sp):
            raise ActionError("invalid_input", f"cannot move {src!r} into itself")
        with self._dir(sp[:-1]) as sfd, self._dir(dp[:-1], create=True) as dfd:
            st = _lstat(sfd, sp[-1])
            self._not_state(st)
            if st is None:
                raise ActionError("not_found", f"{src!r} does not exist", hint="Use files_list to see what exists.")
            is_dir = stat.S_ISDIR(st.st_mode)
            if st_ and not is_dir:
                raise ActionError("invalid_input", f"{source!r} ends with '/' but {src!r} is not a directory")
            if not is_dir and not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                raise _denied(f"{src!r} is not a regular file", f"{_CONFINED} (special file)")
            if dt and not is_dir:
                raise ActionError(
                    "invalid_input",
                    f"{destination!r} ends with '/', but {src!r} is a file",
                    hint="Name the destination file, e.g. 'dir/name.txt'.",
                )
            if sp == dp:
                return dst  # a move onto itself is a no-op (as rename(2))
            if is_dir and self.deny.by_path:  # (source and destination themselves passed the checks)
                with self._subdir(sfd, sp[-1], self._state_id()) as sub:
                    if sub is None:
                        raise ActionError("failed", f"cannot open {src!r}")
                    hit = self._first_denied(sub, sp, dp, self._state_id())
                if hit is not None:
                    raise self._tree_denied("move", src, dst, *hit)
            target = _lstat(dfd, dp[-1])
            self._not_state(target)
            if target is not None:
                if not overwrite:
                    raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.")
                if stat.S_ISDIR(target.st_mode) != is_dir:
                    raise ActionError(
                        "invalid_input",
                        f"cannot replace the file {dst!r} with a directory"
                        if is_dir
                        else f"cannot replace the directory {dst!r} with a file",
                    )
                self._trash(dfd, dp[-1], dst)
            os.rename(sp[-1], dp[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
            try:
                os.fsync(dfd)
                if sp[:-1] != dp[:-1]:
                    os.fsync(sfd)
            except OSError as exc:
                raise _after_commit(src, f"moved to {dst!r}", exc) from None
        return dst

    def _first_denied(
        self, dfd: int, sparts: list[str], dparts: list[str], state: tuple[int, int] | None
    ) -> tuple[str, str, str] | None:
        """The first entry under a directory whose denial would change if it were renamed from
        under ``sparts`` to under ``dparts``: ``(path, pattern, "source" | "destination")``, or None.
        An entry denied on both sides (``a/.env`` -> ``b/.env``) keeps its denial: no change."""
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            if _is_temp(item.name):
                continue
            src, dst = "/".join([*sparts, item.name]), "/".join([*dparts, item.name])
            at_src, at_dst = self.deny.rule(src), self.deny.rule(dst)
            if at_src is not None and at_dst is None:
                return src, at_src, "source"
            if at_dst is not None and at_src is None:
                return dst, at_dst, "destination"
            if at_src is not None:
                continue  # denied here and there, and so is all below (denial covers descendants)
            if item.is_dir(follow_symlinks=False):
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None and (hit := self._first_denied(sub, [*sparts, item.name], [*dparts, item.name], state)):
                        return hit
        return None

    @staticmethod
    def _tree_denied(verb: str, src: str, dst: str, path: str, pattern: str, side: str) -> ActionError:
        if side == "source":
            why = (
                f"{src!r} contains {path!r}, which policy.files.deny[{pattern!r}] denies; "
                f"under the new name it would become readable"
            )
        else:
            why = (
                f"{path!r} would be denied by policy.files.deny[{pattern!r}] at the destination, "
                "so its content would become unreachable"
            )
        return ActionError(
            "denied",
            f"cannot {verb} {src!r} to {dst!r}: {why}. Nothing was changed.",
            rule=f"policy.files.deny[{pattern!r}]",
            hint=f"{verb.capitalize()} the allowed files individually instead of the whole directory.",
        )

    @_classified("copy")
    def copy(
        self, source: str, destination: str, *, overwrite: bool = False, cancel: threading.Event | None = None
    ) -> CopyResult:
        """Copy a file or a directory tree. A tree is built in a hidden temporary directory and
        renamed into place at the end, so a failure or a cancel leaves nothing half-copied.
        Symbolic links, special and hard-linked files (and denied paths) are not copied.
        The total size is bounded by ``policy.files.max_write_bytes``."""
        self.check(source)
        self.check(destination, write=True)
        entry = self.stat(source)
        src = entry.path
        dparts, dtrail = self._parse(destination)
        dst = "/".join(dparts) or "."
        if entry.kind == "symlink":
            raise _denied(f"{src!r} is a symbolic link; links are not followed", f"{_CONFINED} (symlink)")
        if entry.kind == "other":
            raise _denied(f"{src!r} is not a regular file", f"{_CONFINED} (special file)")
        if not dparts:
            raise ActionError("invalid_input", "cannot copy onto the workspace root")
        if entry.kind == "file":
            if dtrail:
                raise ActionError(
                    "invalid_input",
                    f"{destination!r} ends with '/', but {src!r} is a file",
                    hint="Name the destination file, e.g. 'dir/name.txt'.",
                )
            if src == dst:
                raise ActionError("invalid_input", "source and destination are the same file")
            if entry.size > self.policy.max_write_bytes:
                raise ActionError(
                    "invalid_input",
                    f"{src!r} is {entry.size} bytes, over the write limit of "
                    f"{self.policy.max_write_bytes} bytes (policy.files.max_write_bytes)",
                    rule="policy.files.max_write_bytes",
                )
            data = self.read_bytes(src, max_bytes=self.policy.max_write_bytes)
            try:
                art = self.write_bytes(dst, data, mode="overwrite" if overwrite else "create")
            except _ExistsError:
                raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.") from None
            return CopyResult([art])
        if (dst + "/").startswith(src + "/") or src == ".":
            raise ActionError("invalid_input", f"cannot copy {src!r} into itself")
        sparts, _ = self._parse(src)
        result = CopyResult()
        with self._dir(sparts) as sfd, self._dir(dparts[:-1], create=True) as pfd:
            target = _lstat(pfd, dparts[-1])
            self._not_state(target)
            if target is not None:
                if not overwrite:
                    raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.")
                if not stat.S_ISDIR(target.st_mode):
                    raise ActionError("invalid_input", f"cannot replace {dst!r} with a directory: it is not one")
            tmp = _temp_name()
            os.mkdir(tmp, 0o755, dir_fd=pfd)
            _inherit_owner(pfd, name=tmp)
            try:
                tfd = os.open(tmp, _DIR_FLAGS, dir_fd=pfd)
                try:
                    budget = [self.policy.max_write_bytes]
                    self._copy_tree(sfd, tfd, sparts, dparts, result, budget, self._state_id(), cancel)
                finally:
                    os.close(tfd)
                _commit(cancel)  # from here on, a deadline cannot stop it: it completes
                if target is not None:
                    self._trash(pfd, dparts[-1], dst)
                os.rename(tmp, dparts[-1], src_dir_fd=pfd, dst_dir_fd=pfd)
            except BaseException:
                with suppress(OSError):
                    shutil.rmtree(tmp, dir_fd=pfd)
                raise
            os.fsync(pfd)
        return result

    def _copy_tree(
        self,
        sfd: int,
        tfd: int,
        sparts: list[str],
        dparts: list[str],
        result: CopyResult,
        budget: list[int],
        state: tuple[int, int] | None,
        cancel: threading.Event | None,
    ) -> None:
        with os.scandir(sfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            _cancelled(cancel)
            if _is_temp(item.name):
                continue
            rel, out_rel = "/".join([*sparts, item.name]), "/".join([*dparts, item.name])
            if (pattern := self.deny.rule(rel) or self.deny.rule(out_rel)) is not None:
                result.denied[pattern] = result.denied.get(pattern, 0) + 1
                continue
            if item.is_dir(follow_symlinks=False):
                with self._subdir(sfd, item.name, state) as sub:
                    if sub is None:
                        continue
                    os.mkdir(item.name, 0o755, dir_fd=tfd)
                    _inherit_owner(tfd, name=item.name)
                    nfd = os.open(item.name, _DIR_FLAGS, dir_fd=tfd)
                    try:
                        self._copy_tree(sub, nfd, [*sparts, item.name], [*dparts, item.name], result, budget, state, cancel)
                    finally:
                        os.close(nfd)
                continue
            if not item.is_file(follow_symlinks=False):
                result.skipped.append(rel)
                continue
            try:
                fd = self._open_file(sfd, item.name, rel)
            except ActionError as exc:
                if exc.type == "not_found":
                    continue
                result.skipped.append(rel)
                continue
            try:
                mode = stat.S_IMODE(os.fstat(fd).st_mode)
                data, size = _read_fd(fd, budget[0] + 1)
            finally:
                os.close(fd)
            if size > budget[0]:
                raise ActionError(
                    "invalid_input",
                    f"copying {'/'.join(sparts)!r} is over the write limit of "
                    f"{self.policy.max_write_bytes} bytes (policy.files.max_write_bytes)",
                    rule="policy.files.max_write_bytes",
                )
            budget[0] -= size
            wfd = os.open(item.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=tfd)
            try:
                _inherit_owner(tfd, fd=wfd)
                _write_all(wfd, data)
                _datasync(wfd)
            finally:
                os.close(wfd)
            result.artifacts.append(Artifact(path=out_rel, mime_type=guess_mime(out_rel), size=len(data)))
        os.fsync(tfd)

    # -- deleting and the trash ----------------------------------------------------------------
    @property
    def trash_dir(self) -> Path:
        return self.state_dir / "trash"

    @_classified("delete")
    def delete(self, path: str, *, recursive: bool = False) -> str:
        """Move to the trash in the state directory; returns the trash id (for ``restore``)."""
        self.check(path, write=True)
        parts, trailing = self._parse(path)
        rel = "/".join(parts)
        if not parts:
            raise ActionError("invalid_input", "cannot delete the workspace root")
        with self._dir(parts[:-1]) as dfd:
            st = _lstat(dfd, parts[-1])
            self._not_state(st)
            if st is None:
                raise ActionError("not_found", f"{rel!r} does not exist", hint="Use files_list to see what exists.")
            if trailing and not stat.S_ISDIR(st.st_mode):
                raise ActionError("invalid_input", f"{path!r} ends with '/' but {rel!r} is not a directory")
            if stat.S_ISDIR(st.st_mode) and not recursive:
                with self._subdir(dfd, parts[-1], self._state_id()) as sub:
                    if sub is None:
                        raise ActionError("failed", f"cannot open {rel!r}")
                    with os.scandir(sub) as it:
                        empty = not any(True for _ in it)
                if not empty:
                    raise ActionError(
                        "invalid_input",
                        f"{rel!r} is a non-empty directory",
                        hint="Pass recursive=true to delete it and its contents.",
                    )
            trash_id = self._trash(dfd, parts[-1], rel)
            os.fsync(dfd)
            return trash_id

    def _trash(self, dfd: int, name: str, rel: str) -> str:
        """Move ``name`` (in ``dfd``) to a new trash slot with a manifest; returns the slot id."""
        st = os.lstat(name, dir_fd=dfd)
        trash_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
        slot = self.trash_dir / trash_id
        try:
            slot.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise resource_error(exc, "move to the trash", rel, disk="the state directory's disk") or exc from None
        manifest = {
            "trash_id": trash_id,
            "path": rel,
            "kind": _kind(st.st_mode),
            "size": st.st_size,
            "workspace": str(self.root),
            "deleted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        moved = False
        try:
            _write_json(slot / "manifest.json", manifest)
            tfd = os.open(slot, _DIR_FLAGS)
            try:
                try:
                    os.rename(name, "item", src_dir_fd=dfd, dst_dir_fd=tfd)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_across(dfd, name, tfd)  # state dir on another filesystem
                moved = True
                os.fsync(tfd)
            finally:
                os.close(tfd)
        except OSError as exc:
            if moved:  # the item is in the slot now: keep it (removing the slot would lose it)
                raise _after_commit(rel, f"moved to the trash (id {trash_id})", exc) from None
            shutil.rmtree(slot, ignore_errors=True)
            raise resource_error(exc, "move to the trash", rel, disk="the state directory's disk") or exc from None
        except BaseException:
            if not moved:
                shutil.rmtree(slot, ignore_errors=True)
            raise
        return trash_id

    def trash(self) -> list[dict[str, Any]]:
        """Manifests of the items in the trash, newest first (for the operator)."""
        out = []
        with suppress(FileNotFoundError):
            for slot in self.trash_dir.iterdir():
                with suppress(OSError, ValueError):
                    out.append(json.loads((slot / "manifest.json").read_text(encoding="utf-8")))
        return sorted(out, key=lambda m: str(m.get("trash_id", "")), reverse=True)

    @_classified("restore")
    def restore(self, trash_id: str, *, destination: str | None = None, overwrite: bool = False) -> str:
        """Put a trashed item back at its original path (or ``destination``); returns the path."""
        if not _TRASH_ID.match(trash_id):
            raise ActionError("invalid_input", f"not a trash id: {trash_id!r}")
        slot = self.trash_dir / trash_id
        try:
            manifest = json.loads((slot / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ActionError("not_found", f"nothing in the trash with id {trash_id!r}") from None
        rel = self.check(destination or manifest["path"], write=True)
        parts, _ = self._parse(rel)
        if not parts:
            raise ActionError("invalid_input", "cannot restore onto the workspace root")
        tfd = os.open(slot, _DIR_FLAGS)
        try:
            with self._dir(parts[:-1], create=True) as dfd:
                target = _lstat(dfd, parts[-1])
                self._not_state(target)
                if target is not None:
                    if not overwrite:
                        raise ActionError(
                            "invalid_input", f"{rel!r} already exists", hint="Pass overwrite=True or another destination."
                        )
                    self._trash(dfd, parts[-1], rel)
                os.rename("item", parts[-1], src_dir_fd=tfd, dst_dir_fd=dfd)
                os.fsync(dfd)
        finally:
            os.close(tfd)
        shutil.rmtree(slot, ignore_errors=True)
        return rel


@functools.cache
def _owner_tag() -> str:
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return hashlib.sha256(f"{os.uname().nodename}/{ns}".encode()).hexdigest()[:8]


def _temp_name() -> str:
    return f"{_TMP_PREFIX}{_owner_tag()}-{os.getpid()}-{secrets.token_hex(6)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def _stale(name: str, mtime: float, now: float, grace_s: float) -> bool:
    """Whether a temporary name is abandoned: its owner (in our pid namespace) is dead, or it is
    older than the grace period and not ours. Names not of our exact pattern are never touched."""
    m = _TMP_NAME.match(name)
    if m is None:
        return False
    tag, pid = m.group(1), m.group(2)
    if tag == _owner_tag() and pid is not None:
        if int(pid) == os.getpid():
            return False  # ours, in progress (an operation in this process never takes an hour)
        if not _pid_alive(int(pid)):
            return True
    return now - mtime > grace_s


@dataclass(slots=True)
class SweepResult:
    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    complete: bool = True
    """False if the walk stopped at its entry cap (a huge workspace): the rest waits for next time."""


def _is_temp(name: str) -> bool:
    """Our temporary names, whatever their case (a case-insensitive file system aliases them)."""
    return name[: len(_TMP_PREFIX)].lower() == _TMP_PREFIX


def _tree_size(dfd: int, name: str) -> int:
    total = 0
    with suppress(OSError):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            for _, _, files, sub in os.fwalk(dir_fd=fd):
                for f in files:
                    with suppress(OSError):
                        total += os.lstat(f, dir_fd=sub).st_size
        finally:
            os.close(fd)
    return total


def _read_fd(fd: int, max_bytes: int, size: int | None = None) -> tuple[bytes, int]:
    if size is None:
        size = os.fstat(fd).st_size
    chunks, remaining = [], min(size, max_bytes)
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks), size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, json.dumps(value, indent=2).encode())
        _datasync(fd)
    finally:
        os.close(fd)


def _copy_across(dfd: int, name: str, tfd: int) -> None:
    """Move ``name`` to ``tfd``/item across filesystems without following a swapped-in symlink:
    the source is pinned by an O_NOFOLLOW descriptor before copying."""
    st = os.lstat(name, dir_fd=dfd)
    if stat.S_ISDIR(st.st_mode):
        sfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            shutil.copytree(f"/proc/self/fd/{sfd}", f"/proc/self/fd/{tfd}/item", symlinks=True)
        finally:
            os.close(sfd)
        shutil.rmtree(name, dir_fd=dfd)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=dfd), "item", dir_fd=tfd)
        os.unlink(name, dir_fd=dfd)
    else:
        sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            wfd = os.open("item", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=tfd)
            try:
                while chunk := os.read(sfd, 1 << 20):
                    _write_all(wfd, chunk)
                os.fsync(wfd)
            finally:
                os.close(wfd)
        finally:
            os.close(sfd)
        os.unlink(name, dir_fd=dfd)


def decode_text(data: bytes, *, complete: bool = True) -> str | None:
    """UTF-8 text, or None if the bytes look binary. ``complete=False``: the data was cut at a
    size limit, so an incomplete character at the end is dropped rather than called binary."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
    except UnicodeDecodeError:
        return None


def _inherit_owner(dir_fd: int, *, fd: int | None = None, name: str | None = None) -> None:
    """As root, a new entry Agent Legs creates stays usable by the code sandbox's user: in a directory
    owned by a non-root user (the account the sandbox runs as) it gets that owner; in a root-owned one
    it gets the directory's ACL grants (the sandbox user's named entry, see ``_acl``), unless it is a
    private file. A no-op for other users (the sandbox then runs as that user)."""
    if os.geteuid() != 0:
        return
    st = os.fstat(dir_fd)
    if st.st_uid == 0:
        with suppress(OSError):  # a grant that cannot be made never fails the write itself
            if fd is not None:
                _acl.mark_written(fd)
                _acl.inherit_grants(dir_fd, fd)
            elif name is not None:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    _acl.inherit_grants(dir_fd, nfd)
                finally:
                    os.close(nfd)
        return
    if fd is not None:
        os.fchown(fd, st.st_uid, st.st_gid)
    elif name is not None:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def _kind(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None


def _unlink_quiet(dfd: int, name: str) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=dfd)


def guess_mime(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
