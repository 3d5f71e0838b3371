"""Descriptor-level primitives of the workspace: every helper works relative to a directory descriptor.

Invariants: nothing here follows a symbolic link (``O_NOFOLLOW``, ``lstat``, ``_DIR_FLAGS``) or takes a
path from the root: callers hand in a descriptor they reached by the confined walk (``_paths``), so a
component swapped for a link after the walk is never traversed. Writes loop until every byte is written;
reads stop at a byte cap, so a file growing meanwhile cannot make a read unbounded.
"""

from __future__ import annotations

import json
import os
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

__all__ = ["DIR_FLAGS", "Kind", "datasync", "kind_of", "lstat", "read_fd", "unlink_quiet", "write_all", "write_json"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# fdatasync flushes the data and the size (what a reader needs); the rename is made durable by the
# directory fsync. Not every platform has it.
datasync = getattr(os, "fdatasync", os.fsync)

Kind = Literal["file", "dir", "symlink", "other"]


def kind_of(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def lstat(dfd: int, name: str) -> os.stat_result | None:
    """The entry itself (a link is not followed), or None if it does not exist."""
    try:
        return os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None


def read_fd(fd: int, max_bytes: int, size: int | None = None) -> tuple[bytes, int]:
    """Up to ``max_bytes`` from the descriptor, and the file's size (``fstat``'s, or ``size``)."""
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


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_json(path: Path, value: dict[str, Any]) -> None:
    """A new private file (``O_EXCL``, 0600) holding ``value``, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, json.dumps(value, indent=2).encode())
        datasync(fd)
    finally:
        os.close(fd)


def unlink_quiet(dfd: int, name: str) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=dfd)
