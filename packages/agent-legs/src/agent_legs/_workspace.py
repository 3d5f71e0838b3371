"""The workspace: the one place that touches the agent's files on disk.

Every path an action names is normalised and checked here, then reached by walking from the
workspace root one component at a time with directory file descriptors and ``O_NOFOLLOW``: a
symlink anywhere on the way (even one swapped in between a check and the use) is refused by the
kernel, so nothing outside the root can be reached. Writes are atomic (temp file, fsync, rename);
deletes are moves into the state directory's trash.
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ._errors import ActionError
from ._models import Artifact
from ._policy import FilesPolicy

__all__ = ["Entry", "Workspace", "glob_to_regex"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_PREFIX = ".agent-legs-tmp-"
WriteMode = Literal["overwrite", "append", "create"]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob: ``**`` spans directories, ``*`` and ``?`` stay within one name."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    kind: Literal["file", "dir", "symlink", "other"]
    size: int
    mtime: float


def _denied(message: str, rule: str) -> ActionError:
    return ActionError("denied", message, rule=rule)


class Workspace:
    def __init__(self, root: Path, policy: FilesPolicy, state_dir: Path) -> None:
        self.root = Path(root).resolve()
        self.policy = policy
        self.state_dir = Path(state_dir).resolve()
        # Patterns without "/" deny a name anywhere in the path; others match the whole path.
        self._deny = [(p, glob_to_regex(p), "/" not in p) for p in policy.deny]

    # -- path checks ---------------------------------------------------------------------------
    def check(self, path: str, *, write: bool = False) -> str:
        """Normalise a model-given path to ``a/b.txt`` (``.`` for the root) or raise."""
        parts = self._parts(path)
        rel = "/".join(parts) or "."
        if write and self.policy.read_only:
            raise _denied(f"cannot modify {rel!r}: the workspace is read-only", "policy.files.read_only")
        return rel

    def _parts(self, path: str) -> list[str]:
        if not isinstance(path, str):
            raise ActionError("invalid_input", "path must be a string")
        if "\x00" in path:
            raise ActionError("invalid_input", "path contains a NUL byte")
        if any(ord(c) < 32 for c in path):
            raise ActionError("invalid_input", "path contains control characters")
        raw = path.strip()
        if "\\" in raw:
            raise ActionError("invalid_input", f"use '/' as the path separator, not '\\\\': {path!r}",
                              hint="Paths are relative to the workspace, e.g. 'reports/summary.txt'.")
        if re.match(r"^[A-Za-z]:", raw):
            raise ActionError("invalid_input", f"drive-letter paths are not workspace paths: {path!r}",
                              hint="Paths are relative to the workspace, e.g. 'reports/summary.txt'.")
        if raw.startswith("~"):
            raise _denied(f"{path!r} points outside the workspace (home directory)", "workspace confinement")
        if raw.startswith("/"):
            root = str(self.root)
            if raw == root or raw.startswith(root + "/"):
                raw = raw[len(root):]
            else:
                raise _denied(f"{path!r} is outside the workspace", "workspace confinement")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _denied(f"{path!r} escapes the workspace ('..' is not allowed)", "workspace confinement")
        rel = "/".join(parts)
        for part in parts:
            if len(part.encode()) > 255:
                raise ActionError("invalid_input", "a path component is longer than 255 bytes")
        if any(p.startswith(_TMP_PREFIX) for p in parts):
            raise _denied(f"{path!r} is an Agent Legs temporary file", "workspace confinement")
        for pattern, rx, anywhere in self._deny:
            if rx.match(rel) or (anywhere and any(rx.match(p) for p in parts)):
                raise _denied(f"{rel!r} matches a denied pattern", f"policy.files.deny[{pattern!r}]")
        return parts

    def is_denied(self, rel: str) -> bool:
        try:
            self._parts(rel)
        except ActionError:
            return True
        return False

    # -- fd walking ----------------------------------------------------------------------------
    @contextmanager
    def _dir(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """An fd of the directory ``parts`` (from the root, never following a symlink)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise ActionError("not_found", f"directory {'/'.join(parts[: i + 1])!r} does not exist") from None
                    with suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise self._walk_error(fd, name, "/".join(parts[: i + 1]), exc) from None
                os.close(fd)
                fd = nfd
            self._not_state_dir(fd, parts)
            yield fd
        finally:
            os.close(fd)

    def _walk_error(self, dir_fd: int, name: str, rel: str, exc: OSError) -> ActionError:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError:
            return ActionError("failed", f"cannot open {rel!r}: {exc.strerror}")
        if stat.S_ISLNK(st.st_mode):
            return _denied(f"{rel!r} is a symbolic link; links are not followed", "workspace confinement (symlink)")
        if exc.errno == errno.ENOTDIR:
            return ActionError("invalid_input", f"{rel!r} is not a directory")
        return ActionError("failed", f"cannot open {rel!r}: {exc.strerror}")

    def _not_state_dir(self, fd: int, parts: list[str]) -> None:
        try:
            st, sd = os.fstat(fd), os.stat(self.state_dir)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == (sd.st_dev, sd.st_ino):
            raise _denied("the state directory is never reachable", "workspace confinement (state dir)")

    def _open_file(self, dir_fd: int, name: str, rel: str, flags: int) -> int:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ActionError("not_found", f"{rel!r} does not exist",
                              hint="Use files_list to see what exists.") from None
        except IsADirectoryError:
            raise ActionError("invalid_input", f"{rel!r} is a directory",
                              hint="Use files_list to see its contents.") from None
        except OSError as exc:
            raise self._walk_error(dir_fd, name, rel, exc) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ActionError("invalid_input", f"{rel!r} is a directory", hint="Use files_list to see its contents.")
            raise _denied(f"{rel!r} is not a regular file (device, FIFO or socket)", "workspace confinement (special file)")
        if st.st_nlink > 1:
            os.close(fd)
            raise _denied(f"{rel!r} is hard-linked elsewhere and could alias a file outside the workspace",
                          "workspace confinement (hard link)")
        return fd

    # -- reading -------------------------------------------------------------------------------
    def read_bytes(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The file's bytes; raises ``invalid_input`` if it is larger than ``max_bytes``."""
        data, size = self.read_head(path, max_bytes if max_bytes is not None else self.policy.max_read_bytes)
        if len(data) < size:
            raise ActionError("invalid_input", f"{path!r} is {size} bytes, over the limit of {len(data)} bytes")
        return data

    def read_head(self, path: str, max_bytes: int) -> tuple[bytes, int]:
        """Up to ``max_bytes`` from the start of the file, and its full size."""
        parts = self._parts(path)
        if not parts:
            raise ActionError("invalid_input", "the workspace root is a directory")
        with self._dir(parts[:-1]) as dfd:
            fd = self._open_file(dfd, parts[-1], "/".join(parts), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                chunks, remaining = [], min(size, max_bytes)
                while remaining > 0:
                    chunk = os.read(fd, min(remaining, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
                return b"".join(chunks), size
            finally:
                os.close(fd)

    def open_read(self, path: str) -> BinaryIO:
        parts = self._parts(path)
        if not parts:
            raise ActionError("invalid_input", "the workspace root is a directory")
        with self._dir(parts[:-1]) as dfd:
            fd = self._open_file(dfd, parts[-1], "/".join(parts), os.O_RDONLY)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def stat(self, path: str) -> Entry:
        parts = self._parts(path)
        rel = "/".join(parts) or "."
        if not parts:
            st = os.stat(self.root)
            return Entry(".", "dir", 0, st.st_mtime)
        with self._dir(parts[:-1]) as dfd:
            try:
                st = os.lstat(parts[-1], dir_fd=dfd)
            except FileNotFoundError:
                raise ActionError("not_found", f"{rel!r} does not exist") from None
        return Entry(rel, _kind(st.st_mode), st.st_size, st.st_mtime)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except ActionError as exc:
            if exc.type == "not_found":
                return False
            raise
        return True

    def artifact(self, path: str) -> Artifact:
        entry = self.stat(path)
        return Artifact(path=entry.path, mime_type=guess_mime(entry.path), size=entry.size)

    def iter_entries(self, path: str = ".", *, recursive: bool = False, limit: int | None = None) -> Iterator[Entry]:
        """Entries under a directory (symlinks listed, never followed; denied paths hidden)."""
        parts = self._parts(path)
        with self._dir(parts) as dfd:
            yield from self._scan(dfd, parts, recursive)

    def _scan(self, dfd: int, parts: list[str], recursive: bool) -> Iterator[Entry]:
        with os.scandir(dfd) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            rel = "/".join([*parts, item.name])
            if item.name.startswith(_TMP_PREFIX) or self.is_denied(rel):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            kind = _kind(st.st_mode)
            yield Entry(rel, kind, st.st_size if kind == "file" else 0, st.st_mtime)
            if recursive and kind == "dir":
                try:
                    sub = os.open(item.name, _DIR_FLAGS, dir_fd=dfd)
                except OSError:
                    continue
                try:
                    if not self._is_state_dir(sub):
                        yield from self._scan(sub, [*parts, item.name], True)
                finally:
                    os.close(sub)

    def _is_state_dir(self, fd: int) -> bool:
        try:
            self._not_state_dir(fd, [])
        except ActionError:
            return True
        return False

    # -- writing -------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes, *, mode: WriteMode = "overwrite") -> Artifact:
        """Atomically write (temp file + fsync + rename), creating parent directories."""
        rel = self.check(path, write=True)
        parts = self._parts(rel)
        if not parts:
            raise ActionError("invalid_input", "cannot write to the workspace root")
        if len(data) > self.policy.max_write_bytes:
            raise ActionError("invalid_input", f"{len(data)} bytes is over the write limit of "
                              f"{self.policy.max_write_bytes} bytes", rule="policy.files.max_write_bytes")
        name = parts[-1]
        with self._dir(parts[:-1], create=True) as dfd:
            existing = _lstat(dfd, name)
            file_mode = 0o644
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    raise _denied(f"{rel!r} is a symbolic link; links are not written through",
                                  "workspace confinement (symlink)")
                if stat.S_ISDIR(existing.st_mode):
                    raise ActionError("invalid_input", f"{rel!r} is a directory")
                if not stat.S_ISREG(existing.st_mode):
                    raise _denied(f"{rel!r} is not a regular file", "workspace confinement (special file)")
                if mode == "create":
                    raise ActionError("invalid_input", f"{rel!r} already exists",
                                      hint="Use mode='overwrite' to replace it or 'append' to add to it.")
                file_mode = stat.S_IMODE(existing.st_mode)
                if mode == "append":
                    fd = self._open_file(dfd, name, rel, os.O_RDONLY)
                    try:
                        with os.fdopen(fd, "rb", closefd=False) as f:
                            old = f.read(self.policy.max_write_bytes + 1)
                    finally:
                        os.close(fd)
                    data = old + data
                    if len(data) > self.policy.max_write_bytes:
                        raise ActionError("invalid_input", f"appending would make {rel!r} {len(data)} bytes, over "
                                          f"the limit of {self.policy.max_write_bytes}", rule="policy.files.max_write_bytes")
            tmp = self._write_temp(dfd, data, file_mode)
            try:
                if mode == "create":
                    try:
                        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except FileExistsError:
                        raise ActionError("invalid_input", f"{rel!r} already exists") from None
                    os.unlink(tmp, dir_fd=dfd)
                else:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quiet(dfd, tmp)
                raise
            os.fsync(dfd)
        return Artifact(path=rel, mime_type=guess_mime(rel), size=len(data))

    def _write_temp(self, dfd: int, data: bytes, file_mode: int) -> str:
        tmp = f"{_TMP_PREFIX}{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode, dir_fd=dfd)
        try:
            _inherit_owner(dfd, fd=fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(dfd, tmp)
            raise
        os.close(fd)
        return tmp

    def save_unique(self, path: str, data: bytes) -> Artifact:
        """Write to ``path`` or, if taken, ``stem-1.ext``, ``stem-2.ext``... (never overwrites)."""
        rel = self.check(path, write=True)
        stem, dot, ext = rel.rpartition(".") if "." in rel.rsplit("/", 1)[-1] else (rel, "", "")
        for i in range(10_000):
            candidate = rel if i == 0 else f"{stem}-{i}{dot}{ext}"
            try:
                return self.write_bytes(candidate, data, mode="create")
            except ActionError as exc:
                if exc.type == "invalid_input" and "already exists" in exc.message:
                    continue
                raise
        raise ActionError("failed", f"no free name for {rel!r}")

    def mkdir(self, path: str) -> str:
        rel = self.check(path, write=True)
        with self._dir(self._parts(rel), create=True):
            pass
        return rel

    def move(self, source: str, destination: str, *, overwrite: bool = False) -> str:
        src, dst = self.check(source, write=True), self.check(destination, write=True)
        sp, dp = self._parts(src), self._parts(dst)
        if not sp or not dp:
            raise ActionError("invalid_input", "cannot move the workspace root")
        if sp == dp:
            if not self.exists(src):
                raise ActionError("not_found", f"{src!r} does not exist")
            return dst  # a move onto itself is a no-op (as rename(2))
        if dp[: len(sp)] == sp:
            raise ActionError("invalid_input", f"cannot move {src!r} into itself")
        with self._dir(sp[:-1]) as sfd, self._dir(dp[:-1], create=True) as dfd:
            st = _lstat(sfd, sp[-1])
            if st is None:
                raise ActionError("not_found", f"{src!r} does not exist")
            target = _lstat(dfd, dp[-1])
            if target is not None:
                if not overwrite:
                    raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.")
                if stat.S_ISDIR(target.st_mode) and not stat.S_ISDIR(st.st_mode):
                    raise ActionError("invalid_input", f"{dst!r} is a directory")
                if stat.S_ISDIR(target.st_mode):
                    self._trash(dfd, dp[-1], dst)
            os.rename(sp[-1], dp[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        return dst

    def copy(self, source: str, destination: str, *, overwrite: bool = False) -> list[Artifact]:
        src, dst = self.check(source), self.check(destination, write=True)
        entry = self.stat(src)
        if entry.kind == "symlink":
            raise _denied(f"{src!r} is a symbolic link; links are not followed", "workspace confinement (symlink)")
        if entry.kind == "file":
            if not overwrite and self.exists(dst):
                raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.")
            return [self.write_bytes(dst, self.read_bytes(src, max_bytes=self.policy.max_write_bytes))]
        if entry.kind != "dir":
            raise _denied(f"{src!r} is not a regular file", "workspace confinement (special file)")
        if (dst + "/").startswith(src + "/"):
            raise ActionError("invalid_input", f"cannot copy {src!r} into itself")
        if not overwrite and self.exists(dst):
            raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to merge into it.")
        entries = list(self.iter_entries(src, recursive=True))
        total = sum(e.size for e in entries if e.kind == "file")
        if total > self.policy.max_write_bytes:
            raise ActionError("invalid_input", f"copying {total} bytes is over the write limit",
                              rule="policy.files.max_write_bytes")
        self.mkdir(dst)
        out = []
        for e in entries:
            target = dst + e.path[len(src):]
            if e.kind == "dir":
                self.mkdir(target)
            elif e.kind == "file":
                out.append(self.write_bytes(target, self.read_bytes(e.path, max_bytes=self.policy.max_write_bytes)))
        return out

    def delete(self, path: str, *, recursive: bool = False) -> str:
        """Move to the trash in the state directory; returns the trash location."""
        rel = self.check(path, write=True)
        parts = self._parts(rel)
        if not parts:
            raise ActionError("invalid_input", "cannot delete the workspace root")
        with self._dir(parts[:-1]) as dfd:
            st = _lstat(dfd, parts[-1])
            if st is None:
                raise ActionError("not_found", f"{rel!r} does not exist")
            if stat.S_ISDIR(st.st_mode) and not recursive:
                sub = os.open(parts[-1], _DIR_FLAGS, dir_fd=dfd)
                try:
                    with os.scandir(sub) as it:
                        empty = not any(True for _ in it)
                finally:
                    os.close(sub)
                if not empty:
                    raise ActionError("invalid_input", f"{rel!r} is a non-empty directory",
                                      hint="Pass recursive=true to delete it and its contents.")
            return self._trash(dfd, parts[-1], rel)

    def _trash(self, dfd: int, name: str, rel: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        slot = self.state_dir / "trash" / f"{stamp}-{secrets.token_hex(4)}"
        slot.mkdir(parents=True, mode=0o700)
        (slot / "manifest.json").write_text(json.dumps({"path": rel, "deleted_at": time.time()}))
        tfd = os.open(slot, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.rename(name, "item", src_dir_fd=dfd, dst_dir_fd=tfd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                import shutil  # state dir on another filesystem: copy, then remove

                src = f"/proc/self/fd/{dfd}/{name}"
                if os.path.isdir(src):
                    shutil.copytree(src, slot / "item", symlinks=True)
                    shutil.rmtree(src)
                else:
                    shutil.copy2(src, slot / "item", follow_symlinks=False)
                    os.unlink(name, dir_fd=dfd)
        finally:
            os.close(tfd)
        return str(slot)


def _inherit_owner(dir_fd: int, *, fd: int | None = None, name: str | None = None) -> None:
    """As root, give new entries their directory's owner, so a workspace owned by the (non-root)
    sandbox user stays writable by it. A no-op for other users."""
    if os.geteuid() != 0:
        return
    st = os.fstat(dir_fd)
    if st.st_uid == 0:
        return
    if fd is not None:
        os.fchown(fd, st.st_uid, st.st_gid)
    elif name is not None:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def _kind(mode: int) -> Literal["file", "dir", "symlink", "other"]:
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
