"""Confinement: every model-given path is normalised and checked here, then reached by descriptors.

A path is split into components and refused when it escapes (``..``, ``~``, absolute outside the root),
is malformed (NUL, control characters, lone surrogates, backslashes, drive letters, too long), names an
Agent Legs temporary file, or matches ``policy.files.deny`` (``agent_legs._matching.DenyList``). It is
then reached by walking from the workspace root one component at a time with directory file descriptors
and ``O_NOFOLLOW``: a symlink anywhere on the way (even one swapped in between a check and the use) is
refused by the kernel, so nothing outside the root can be reached. Every directory on the way is compared
(device, inode) with the state directory, which stays unreachable even if it shows up inside the
workspace (bind mount, rename). Files are opened ``O_NONBLOCK`` and checked with ``fstat`` on the open
descriptor, so FIFOs, devices and sockets are refused without blocking.

Hard links: a regular file with more than one link is refused for reading (it may alias a file outside
the workspace, e.g. a secret the operator hard-linked in; we cannot tell where the other names are).

Threat model: the model chooses every path (and may race the file system through the code sandbox); the
operator chooses the root, the state directory and the deny patterns. ``ConfinedTree`` holds no mutable
state, so it is thread-safe. Its underscore methods (``_dir``, ``_subdir``, ``_open_file``...) are the
walking API the sibling modules of this family use; nothing outside the family calls them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..._errors import ActionError
from ..._matching import DenyList
from ..._policy import FilesPolicy
from ._cancel import cancelled
from ._errors import CONFINED, classified, denied, resource_error
from ._fd import DIR_FLAGS
from ._owner import inherit_owner
from ._temp import TMP_PREFIX, is_temp

__all__ = ["MAX_PATH_BYTES", "ConfinedTree"]

MAX_PATH_BYTES = 4096
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PATH_HINT = "Paths are relative to the workspace, e.g. 'reports/summary.txt'."


class ConfinedTree:
    """The workspace root as a confined tree: path checks and descriptor walks (no mutable state)."""

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
            raise denied(f"cannot modify {rel!r}: the workspace is read-only", "policy.files.read_only")
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
            raise denied(f"{path!r} points outside the workspace (home directory)", CONFINED)
        if raw.startswith("/"):
            root = str(self.root)
            if raw == root or raw.startswith(root + "/"):
                raw = raw[len(root) :]
            else:
                raise denied(f"{path!r} is outside the workspace", CONFINED)
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise denied(f"{path!r} escapes the workspace ('..' is not allowed)", CONFINED)
        rel = "/".join(parts)
        if len(rel.encode()) > MAX_PATH_BYTES:
            raise ActionError("invalid_input", f"path is longer than {MAX_PATH_BYTES} bytes")
        if len(rel) > 63 and any(len(part.encode()) > 255 for part in parts):  # 63 chars: at most 252 bytes
            raise ActionError("invalid_input", "a path component is longer than 255 bytes")
        low = rel.lower()
        if low.startswith(TMP_PREFIX) or f"/{TMP_PREFIX}" in low:
            raise denied(f"{path!r} is an Agent Legs temporary file", CONFINED)
        if deny and (pattern := self.deny.rule(rel)) is not None:
            raise denied(f"{rel!r} matches a denied pattern", f"policy.files.deny[{pattern!r}]")
        return parts, bool(parts) and raw.endswith(("/", "/."))

    def _file_parts(self, path: str, *, write: bool = False) -> tuple[list[str], str]:
        """Components of a path that must name a file (not the root, no trailing slash); with ``write``,
        ``check(path, write=True)``'s refusal of a read-only workspace comes first (one parse, not two)."""
        parts, trailing = self._parse(path)
        if write and self.policy.read_only:
            raise denied(f"cannot modify {'/'.join(parts) or '.'!r}: the workspace is read-only", "policy.files.read_only")
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

    @classified("list")
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
        cancelled(cancel)
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            if is_temp(item.name):
                continue
            rel = "/".join([*parts, item.name])
            if (pattern := self.deny.rule(rel)) is not None:
                yield rel, pattern
                continue
            if item.is_dir(follow_symlinks=False):
                with self._subdir(dfd, item.name, state) as sub:
                    if sub is not None:
                        yield from self._denied_under(sub, [*parts, item.name], state, cancel)

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
            raise denied("the state directory is never reachable", f"{CONFINED} (state dir)")

    def _guard(self, fd: int, state: tuple[int, int] | None) -> None:
        if state is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == state:
                raise denied("the state directory is never reachable", f"{CONFINED} (state dir)")

    @contextmanager
    def _dir(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """An fd of the directory ``parts`` (from the root, never following a symlink)."""
        # The root itself is never the state dir (Legs refuses that); stat the state dir only when
        # there is a directory below the root to compare (saves two syscalls on top-level files).
        state = self._state_id() if parts else None
        fd = os.open(self.root, DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ActionError(
                            "not_found",
                            f"directory {'/'.join(parts[: i + 1])!r} does not exist",
                            hint="Use files_list to see what exists.",
                        ) from None
                    with suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                        inherit_owner(fd, name=name)
                    try:
                        nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
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
            return denied(f"{rel!r} is a symbolic link; links are not followed", f"{CONFINED} (symlink)")
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
                raise denied(f"{rel!r} is not a regular file (FIFO)", f"{CONFINED} (special file)") from None
            raise self._walk_error(dir_fd, name, rel, exc) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ActionError("invalid_input", f"{rel!r} is a directory", hint="Use files_list to see its contents.")
            if not stat.S_ISREG(st.st_mode):
                raise denied(f"{rel!r} is not a regular file (device, FIFO or socket)", f"{CONFINED} (special file)")
            if st.st_nlink > 1:
                raise denied(
                    f"{rel!r} is hard-linked elsewhere and could alias a file outside the workspace", f"{CONFINED} (hard link)"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    @contextmanager
    def _subdir(self, dfd: int, name: str, state: tuple[int, int] | None) -> Iterator[int | None]:
        """An fd of a child directory, or None if it vanished, became a link or is the state dir."""
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
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
