"""The workspace: the one place that touches the agent's files on disk (the facade of this family).

``Workspace`` is what actions, the runtime and other families use. It is a ``ConfinedTree`` (``_paths``:
path checks and descriptor walks: nothing outside the root, no link followed, no special file opened,
the state directory unreachable) with the reading and listing operations here and the rest delegated to
one module per idea:

* ``_atomic``: atomic writes (temp file, fdatasync, rename, directory fsync), unique names;
* ``_copy``: moves and copies (a tree copy is built hidden and renamed into place);
* ``_trash``: deletes are moves into ``<state_dir>/trash/<timestamp>-<id>/`` with a manifest (``restore``);
* ``_temp``: temporary names and the sweep of those interrupted writes left behind;
* ``_text``: text decoding and mime guessing; ``_errors``: typed resource errors; ``_cancel``: the cancel
  flag of tree operations run in worker threads; ``_fd``/``_owner``: descriptor primitives, ACL glue.

Hard links: a regular file with more than one link is refused for reading (it may alias a file
outside the workspace, e.g. a secret the operator hard-linked in; we cannot tell where the other
names are). Overwriting one replaces the name (rename), so the other names never change.
Limitation: package managers that hard-link from a cache (uv, pnpm) produce such files.

Threat model: the model chooses every path and content and may race the file system through the code
sandbox; resource failures of the host (disk full, permissions) come back as typed errors with hints.
Thread-safe: no mutable state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..._errors import ActionError
from ..._models import Artifact
from . import _atomic, _copy, _temp, _trash
from ._atomic import WriteMode
from ._cancel import Cancel, cancelled
from ._copy import CopyResult
from ._errors import CONFINED, classified, denied, resource_error
from ._fd import Kind, kind_of, lstat, read_fd
from ._paths import ConfinedTree
from ._temp import SWEEP_GRACE_S, SWEEP_MAX_ENTRIES, SweepResult, is_temp
from ._text import decode_text, guess_mime

__all__ = [
    "Cancel",
    "CopyResult",
    "Entry",
    "SweepResult",
    "Workspace",
    "WriteMode",
    "decode_text",
    "guess_mime",
    "resource_error",
]


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    kind: Kind
    size: int
    mtime: float


class Workspace(ConfinedTree):
    """Safe filesystem operations confined to ``root``. Thread-safe (no mutable state)."""

    # -- temporary files ------------------------------------------------------------------------
    def sweep_temp(self, *, grace_s: float = SWEEP_GRACE_S, max_entries: int = SWEEP_MAX_ENTRIES) -> SweepResult:
        """Remove temporary files and directories that interrupted writes and copies left behind
        (a killed process): only names of our own pattern, and only when their owner process is
        provably gone (same pid namespace, pid not alive) or they are older than ``grace_s``.
        Walks the workspace with directory descriptors (no symlink followed, the state directory
        skipped), at most ``max_entries`` entries. Errors are skipped, never raised."""
        return _temp.sweep(self, grace_s=grace_s, max_entries=max_entries)

    def start_sweep(self) -> threading.Thread:
        """``sweep_temp`` in a background thread (the first use of a workspace must not wait for a
        walk of a large tree); its result is logged. ``join()`` the thread to wait for it."""
        return _temp.start_sweep(self)

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

    @classified("read")
    def read_file(self, path: str, max_bytes: int) -> tuple[str, bytes, int]:
        """``(normalised path, up to max_bytes from the start, full size)`` in one check and walk."""
        parts, rel = self._file_parts(path)
        with self._dir(parts[:-1]) as dfd:
            fd, st = self._open_file_stat(dfd, parts[-1], rel)
        try:
            data, size = read_fd(fd, max_bytes, st.st_size)
        finally:
            os.close(fd)
        return rel, data, size

    @classified("open")
    def open_read(self, path: str) -> BinaryIO:
        """A binary file object for streaming (attachments). The caller closes it."""
        parts, rel = self._file_parts(path)
        with self._dir(parts[:-1]) as dfd:
            fd = self._open_file(dfd, parts[-1], rel)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    @classified("inspect")
    def stat(self, path: str) -> Entry:
        """What ``path`` is (a symlink is reported as such, never followed)."""
        parts, trailing = self._parse(path)
        rel = "/".join(parts) or "."
        with self._dir(parts[:-1]) as dfd:
            if not parts:
                return Entry(".", "dir", 0, os.fstat(dfd).st_mtime)
            st = lstat(dfd, parts[-1])
        if st is None:
            raise ActionError("not_found", f"{rel!r} does not exist", hint="Use files_list to see what exists.")
        kind = kind_of(st.st_mode)
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

    @classified("list")
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
        cancelled(cancel)
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            rel = "/".join([*parts, item.name])
            if is_temp(item.name) or self.is_denied(rel):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            kind = kind_of(st.st_mode)
            if kind == "dir" and state is not None and (st.st_dev, st.st_ino) == state:
                continue
            yield Entry(rel, kind, st.st_size if kind == "file" else 0, st.st_mtime)
            if recursive and kind == "dir":
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None:
                        yield from self._scan(sub, [*parts, item.name], True, state, cancel)

    @classified("read")
    def iter_files(
        self, path: str, max_bytes: int, *, match: Callable[[str], bool] | None = None, cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, bytes, int]]:
        """``(relative path, first max_bytes, size)`` of every readable regular file under ``path``
        (or of ``path`` itself), skipping what cannot be read (links, special, hard-linked, denied)."""
        parts, _ = self._parse(path)
        entry = self.stat(path)
        if entry.kind == "symlink":
            raise denied(f"{entry.path!r} is a symbolic link; links are not followed", f"{CONFINED} (symlink)")
        if entry.kind == "file":
            if match is None or match(entry.path):
                data, size = self.read_head(entry.path, max_bytes)
                yield entry.path, data, size
            return
        if entry.kind != "dir":
            raise denied(f"{entry.path!r} is not a regular file", f"{CONFINED} (special file)")
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
            cancelled(cancel)
            rel = "/".join([*parts, item.name])
            if is_temp(item.name) or self.is_denied(rel):
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
                    data, size = read_fd(fd, max_bytes)
                finally:
                    os.close(fd)
                yield rel, data, size

    # -- writing -------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes, *, mode: WriteMode = "overwrite", max_bytes: int | None = None) -> Artifact:
        """Atomically write (temp file + fdatasync + rename + directory fsync), creating parent
        directories. ``create`` fails if the file exists (atomically: link(2), no clobbering);
        ``max_bytes`` defaults to ``policy.files.max_write_bytes``."""
        return _atomic.write_bytes(self, path, data, mode=mode, max_bytes=max_bytes)

    def save_unique(self, path: str, data: bytes, *, max_bytes: int | None = None) -> Artifact:
        """Write to ``path`` or, if taken, ``stem-1.ext``, ``stem-2.ext``... (never overwrites)."""
        return _atomic.save_unique(self, path, data, max_bytes=max_bytes)

    @classified("create the directory")
    def mkdir(self, path: str) -> str:
        """Create a directory (and its parents); no error if it exists."""
        rel = self.check(path, write=True)
        parts, _ = self._parse(rel)
        with self._dir(parts, create=True):
            pass
        return rel

    # -- moving and copying --------------------------------------------------------------------
    def move(self, source: str, destination: str, *, overwrite: bool = False) -> str:
        """Rename within the workspace. A replaced destination goes to the trash (recoverable)."""
        return _copy.move(self, source, destination, overwrite=overwrite)

    def copy(
        self, source: str, destination: str, *, overwrite: bool = False, cancel: threading.Event | None = None
    ) -> CopyResult:
        """Copy a file or a directory tree. A tree is built in a hidden temporary directory and
        renamed into place at the end, so a failure or a cancel leaves nothing half-copied.
        Symbolic links, special and hard-linked files (and denied paths) are not copied.
        The total size is bounded by ``policy.files.max_write_bytes``."""
        return _copy.copy(self, source, destination, overwrite=overwrite, cancel=cancel)

    # -- deleting and the trash ----------------------------------------------------------------
    @property
    def trash_dir(self) -> Path:
        return _trash.trash_dir(self)

    def delete(self, path: str, *, recursive: bool = False) -> str:
        """Move to the trash in the state directory; returns the trash id (for ``restore``)."""
        return _trash.delete(self, path, recursive=recursive)

    def trash(self) -> list[dict[str, Any]]:
        """Manifests of the items in the trash, newest first (for the operator)."""
        return _trash.list_trash(self)

    def restore(self, trash_id: str, *, destination: str | None = None, overwrite: bool = False) -> str:
        """Put a trashed item back at its original path (or ``destination``); returns the path."""
        return _trash.restore(self, trash_id, destination=destination, overwrite=overwrite)
