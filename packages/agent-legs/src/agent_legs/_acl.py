"""POSIX access ACLs, read and written as the kernel's ``system.posix_acl_access`` xattr (Linux).

Used to let the code sandbox's user (``settings.code.uid``) write in a workspace it does not own
without taking anything from the operator: instead of ``chown`` (which would hand the operator's
files, secrets included, to an unrelated host account), a named-user entry is added to the ACL of
the workspace's directories and of the files Agent Legs itself writes. Owners never change; the
mode's owner and other bits never change (the group bits show the ACL mask, as ``ls -l`` shows for
any file with an ACL; the owning group's own rights stay as they were).

Invariants: every function works on an already-open descriptor (no path is re-resolved, so a
symlink swapped in cannot redirect a grant); existing entries (other named users or groups) are
kept; the mask is recomputed as the union of the group-class entries, as ``setfacl`` does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct

__all__ = ["WRITTEN", "AclUnsupported", "grant", "inherit_grants", "mark_written", "named_users", "written"]

_XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF
_ENTRY = struct.Struct("<HHI")
# Marks a file Agent Legs wrote (trusted.*: only root, with CAP_SYS_ADMIN, can set or even see it, so
# the sandbox cannot forge it); a workspace's first sandbox grants its user those files too.
WRITTEN = "trusted.agent-legs.written"


class AclUnsupported(OSError):
    """The file system does not store POSIX ACLs."""


def _read(fd: int) -> dict[tuple[int, int], int]:
    """The ACL of ``fd`` as {(tag, id): perm}; the minimal ACL (from the mode) when it has none."""
    try:
        raw = os.getxattr(fd, _XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise AclUnsupported(exc.errno, "POSIX ACLs are not supported here") from None
        if exc.errno != errno.ENODATA:
            raise
        raw = b""
    if len(raw) >= 4 and struct.unpack_from("<I", raw)[0] == _VERSION:
        entries = {}
        for off in range(4, len(raw) - _ENTRY.size + 1, _ENTRY.size):
            tag, perm, ident = _ENTRY.unpack_from(raw, off)
            entries[(tag, ident if tag in (_USER, _GROUP) else _UNDEFINED)] = perm
        return entries
    mode = os.fstat(fd).st_mode
    return {(_USER_OBJ, _UNDEFINED): (mode >> 6) & 7, (_GROUP_OBJ, _UNDEFINED): (mode >> 3) & 7, (_OTHER, _UNDEFINED): mode & 7}


def _write(fd: int, entries: dict[tuple[int, int], int]) -> None:
    named = [k for k in entries if k[0] in (_USER, _GROUP)]
    entries = dict(entries)
    if named:  # the mask bounds the group class: named entries and the owning group
        mask = 0
        for (tag, _), perm in entries.items():
            if tag in (_USER, _GROUP, _GROUP_OBJ):
                mask |= perm
        entries[(_MASK, _UNDEFINED)] = mask
    raw = struct.pack("<I", _VERSION) + b"".join(_ENTRY.pack(tag, perm, ident) for (tag, ident), perm in sorted(entries.items()))
    try:
        os.setxattr(fd, _XATTR, raw)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise AclUnsupported(exc.errno, "POSIX ACLs are not supported here") from None
        raise


def grant(fd: int, uid: int, perm: int) -> None:
    """Give user ``uid`` ``perm`` (rwx bits, 0-7) on the open file or directory ``fd``."""
    entries = _read(fd)
    if entries.get((_USER, uid)) == perm:
        return
    entries[(_USER, uid)] = perm
    _write(fd, entries)


def named_users(fd: int) -> dict[int, int]:
    """The named-user entries of ``fd``'s ACL: {uid: perm}."""
    try:
        return {ident: perm for (tag, ident), perm in _read(fd).items() if tag == _USER}
    except OSError:
        return {}


def inherit_grants(dir_fd: int, fd: int) -> None:
    """A new entry ``fd`` created in ``dir_fd`` by Agent Legs: every named user who may write in the
    directory may use it too (a directory: rwx; a file: rw-), unless the file is private (no group or
    other bits, e.g. an operator's 0600 file rewritten with its mode kept)."""
    users = {uid: perm for uid, perm in named_users(dir_fd).items() if perm & 2}
    if not users:
        return
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        perm = 7
    elif stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        perm = 6
    else:
        return
    entries = _read(fd)
    for uid in users:
        entries[(_USER, uid)] = perm
    _write(fd, entries)


def mark_written(fd: int) -> None:
    """Record that Agent Legs wrote the file ``fd`` (root only; silently nothing elsewhere)."""
    with contextlib.suppress(OSError):
        os.setxattr(fd, WRITTEN, b"1")


def written(fd: int) -> bool:
    try:
        return os.getxattr(fd, WRITTEN) == b"1"
    except OSError:
        return False
