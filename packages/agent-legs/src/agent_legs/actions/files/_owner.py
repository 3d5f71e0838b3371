"""Who owns what Agent Legs creates in the workspace (ACL glue for the code sandbox).

Run as root, a new file or directory would be root's and unusable by the sandbox's user. So a new
entry follows its directory: in a directory owned by a non-root user it gets that owner; in a
root-owned one it gets the directory's ACL grants (the sandbox user's named entry, see ``agent_legs._acl``),
unless it is a private file. Run as any other user this is a no-op (the sandbox then runs as that user).

Invariants: only entries Agent Legs just created are touched (by descriptor, or by name relative to the
directory descriptor without following links); a grant that cannot be made never fails the write.
"""

from __future__ import annotations

import os
from contextlib import suppress

from ... import _acl
from ._fd import DIR_FLAGS

__all__ = ["inherit_owner"]


def inherit_owner(dir_fd: int, *, fd: int | None = None, name: str | None = None) -> None:
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
                nfd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
                try:
                    _acl.inherit_grants(dir_fd, nfd)
                finally:
                    os.close(nfd)
        return
    if fd is not None:
        os.fchown(fd, st.st_uid, st.st_gid)
    elif name is not None:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
