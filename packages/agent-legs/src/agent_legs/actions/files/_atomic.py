"""Atomic writes: a file is replaced whole or not at all, and never through a link.

A write goes to a temporary name in the target's directory (``_temp``), is flushed (``fdatasync``), then
renamed over the target and the directory is flushed (``fsync``): a crash leaves either the old or the
new content, and readers never see a partial file. ``create`` links the temporary file to the target name
(``link(2)`` fails if it exists: no clobbering, even against a concurrent writer). Overwriting a
hard-linked file replaces the name (rename), so the file's other names never change.

Invariants: the target directory is reached by the confined walk (``ConfinedTree._dir``); an existing
symlink, directory or special file at the target is refused; the size limit holds for the final content
(an append counts the old bytes too); on a resource failure before the rename the temporary file is
removed and the message says the target is unchanged; after the rename a failed directory flush is
reported as done-but-maybe-not-durable (``after_commit``), never as retryable.
"""

from __future__ import annotations

import os
import stat
from typing import Literal

from ..._errors import ActionError
from ..._models import Artifact
from ._errors import CONFINED, ExistsError, after_commit, classified, denied, resource_error
from ._fd import datasync, lstat, read_fd, unlink_quiet, write_all
from ._owner import inherit_owner
from ._paths import ConfinedTree
from ._temp import temp_name
from ._text import guess_mime

__all__ = ["WriteMode", "save_unique", "write_bytes", "write_temp"]

WriteMode = Literal["overwrite", "append", "create"]


@classified("write")
def write_bytes(
    tree: ConfinedTree, path: str, data: bytes, *, mode: WriteMode = "overwrite", max_bytes: int | None = None
) -> Artifact:
    """Atomically write (temp file + fdatasync + rename + directory fsync), creating parent
    directories. ``create`` fails if the file exists (atomically: link(2), no clobbering);
    ``max_bytes`` defaults to ``policy.files.max_write_bytes``."""
    parts, rel = tree._file_parts(path, write=True)
    limit = tree.policy.max_write_bytes if max_bytes is None else max_bytes
    if len(data) > limit:
        raise ActionError(
            "invalid_input",
            f"{len(data)} bytes is over the write limit of {limit} bytes (policy.files.max_write_bytes)",
            rule="policy.files.max_write_bytes",
        )
    name = parts[-1]
    with tree._dir(parts[:-1], create=True) as dfd:
        existing = lstat(dfd, name)
        file_mode = 0o644
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise denied(f"{rel!r} is a symbolic link; links are not written through", f"{CONFINED} (symlink)")
            if stat.S_ISDIR(existing.st_mode):
                raise ActionError("invalid_input", f"{rel!r} is a directory")
            if not stat.S_ISREG(existing.st_mode):
                raise denied(f"{rel!r} is not a regular file", f"{CONFINED} (special file)")
            if mode == "create":
                raise ExistsError(
                    "invalid_input",
                    f"{rel!r} already exists",
                    hint="Use mode='overwrite' to replace it or 'append' to add to it.",
                )
            file_mode = stat.S_IMODE(existing.st_mode)
            if mode == "append":
                fd = tree._open_file(dfd, name, rel)
                try:
                    old, _ = read_fd(fd, limit + 1)
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
            tmp = write_temp(dfd, data, file_mode)
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
                    raise ExistsError("invalid_input", f"{rel!r} already exists") from None
                finally:
                    unlink_quiet(dfd, tmp)
            else:
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            unlink_quiet(dfd, tmp)
            raise
        try:
            os.fsync(dfd)
        except OSError as exc:
            raise after_commit(rel, "written", exc) from None
    return Artifact(path=rel, mime_type=guess_mime(rel), size=len(data))


def write_temp(dfd: int, data: bytes, file_mode: int) -> str:
    tmp = temp_name()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode, dir_fd=dfd)
    try:
        inherit_owner(dfd, fd=fd)
        write_all(fd, data)
        datasync(fd)
    except BaseException:
        os.close(fd)
        unlink_quiet(dfd, tmp)
        raise
    os.close(fd)
    return tmp


def save_unique(tree: ConfinedTree, path: str, data: bytes, *, max_bytes: int | None = None) -> Artifact:
    """Write to ``path`` or, if taken, ``stem-1.ext``, ``stem-2.ext``... (never overwrites)."""
    rel = tree.check(path, write=True)
    head, _, base = rel.rpartition("/")
    stem, dot, ext = base.partition(".") if not base.startswith(".") else (base, "", "")
    if not stem:
        stem, dot, ext = base, "", ""
    prefix = f"{head}/" if head else ""
    for i in range(10_000):
        candidate = rel if i == 0 else f"{prefix}{stem}-{i}{dot}{ext}"
        try:
            return write_bytes(tree, candidate, data, mode="create", max_bytes=max_bytes)
        except ExistsError:
            continue
    raise ActionError("failed", f"no free name for {rel!r}")
