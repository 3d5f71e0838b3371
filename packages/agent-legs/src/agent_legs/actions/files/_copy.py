"""Moves and copies inside the workspace, whole or not at all.

* ``move``: one ``rename(2)`` between two directory descriptors the confined walk reached. A replaced
  destination goes to the trash first (recoverable). Renaming a directory is refused when it would
  change what ``policy.files.deny`` denies inside it (a denied file would become readable under the new
  name, or an allowed one unreachable): the rule is checked for every entry below, before anything moves.
* ``copy``: a file is read (bounded by ``policy.files.max_write_bytes``) and written atomically; a tree
  is built in a hidden temporary directory and renamed into place at the end, so a failure or a cancel
  leaves nothing half-copied. Symbolic links, special and hard-linked files are not copied (listed as
  skipped); denied entries at the source or the destination are left out (counted per pattern, names not
  shown, as ``files.list`` hides them). The commit point (``_cancel.commit``) is right before the final
  rename: after it a deadline no longer stops the copy.

Invariants: source and destination pass the path checks; the state directory is never moved, replaced or
entered; nothing is followed through a link; the total size copied stays within the write limit.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..._errors import ActionError
from ..._models import Artifact
from ._atomic import write_bytes
from ._cancel import cancelled, commit
from ._errors import CONFINED, ExistsError, after_commit, classified, denied
from ._fd import DIR_FLAGS, datasync, lstat, read_fd, write_all
from ._owner import inherit_owner
from ._paths import ConfinedTree
from ._temp import is_temp, temp_name
from ._text import guess_mime
from ._trash import to_trash

if TYPE_CHECKING:
    from ._workspace import Workspace

__all__ = ["CopyResult", "copy", "first_denied", "move", "tree_denied"]


@dataclass(slots=True)
class CopyResult:
    artifacts: list[Artifact] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Paths left out: symbolic links, special files, hard-linked files."""
    denied: dict[str, int] = field(default_factory=dict)
    """Entries left out because ``policy.files.deny`` denies them at the source or would at the
    destination: count per pattern (names are not shown: they stay as hidden as in files.list)."""


@classified("move")
def move(tree: ConfinedTree, source: str, destination: str, *, overwrite: bool = False) -> str:
    """Rename within the workspace. A replaced destination goes to the trash (recoverable)."""
    tree.check(source, write=True)
    tree.check(destination, write=True)
    (sp, st_), (dp, dt) = tree._parse(source), tree._parse(destination)
    src, dst = "/".join(sp), "/".join(dp)
    if not sp or not dp:
        raise ActionError("invalid_input", "cannot move the workspace root")
    if dp[: len(sp)] == sp and len(dp) > len(sp):
        raise ActionError("invalid_input", f"cannot move {src!r} into itself")
    with tree._dir(sp[:-1]) as sfd, tree._dir(dp[:-1], create=True) as dfd:
        st = lstat(sfd, sp[-1])
        tree._not_state(st)
        if st is None:
            raise ActionError("not_found", f"{src!r} does not exist", hint="Use files_list to see what exists.")
        is_dir = stat.S_ISDIR(st.st_mode)
        if st_ and not is_dir:
            raise ActionError("invalid_input", f"{source!r} ends with '/' but {src!r} is not a directory")
        if not is_dir and not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            raise denied(f"{src!r} is not a regular file", f"{CONFINED} (special file)")
        if dt and not is_dir:
            raise ActionError(
                "invalid_input",
                f"{destination!r} ends with '/', but {src!r} is a file",
                hint="Name the destination file, e.g. 'dir/name.txt'.",
            )
        if sp == dp:
            return dst  # a move onto itself is a no-op (as rename(2))
        if is_dir and tree.deny.by_path:  # (source and destination themselves passed the checks)
            with tree._subdir(sfd, sp[-1], tree._state_id()) as sub:
                if sub is None:
                    raise ActionError("failed", f"cannot open {src!r}")
                hit = first_denied(tree, sub, sp, dp, tree._state_id())
            if hit is not None:
                raise tree_denied("move", src, dst, *hit)
        target = lstat(dfd, dp[-1])
        tree._not_state(target)
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
            to_trash(tree, dfd, dp[-1], dst)
        os.rename(sp[-1], dp[-1], src_dir_fd=sfd, dst_dir_fd=dfd)
        try:
            os.fsync(dfd)
            if sp[:-1] != dp[:-1]:
                os.fsync(sfd)
        except OSError as exc:
            raise after_commit(src, f"moved to {dst!r}", exc) from None
    return dst


def first_denied(
    tree: ConfinedTree, dfd: int, sparts: list[str], dparts: list[str], state: tuple[int, int] | None
) -> tuple[str, str, str] | None:
    """The first entry under a directory whose denial would change if it were renamed from
    under ``sparts`` to under ``dparts``: ``(path, pattern, "source" | "destination")``, or None.
    An entry denied on both sides (``a/.env`` -> ``b/.env``) keeps its denial: no change."""
    with os.scandir(dfd) as it:
        items = sorted(it, key=lambda e: e.name)
    for item in items:
        if is_temp(item.name):
            continue
        src, dst = "/".join([*sparts, item.name]), "/".join([*dparts, item.name])
        at_src, at_dst = tree.deny.rule(src), tree.deny.rule(dst)
        if at_src is not None and at_dst is None:
            return src, at_src, "source"
        if at_dst is not None and at_src is None:
            return dst, at_dst, "destination"
        if at_src is not None:
            continue  # denied here and there, and so is all below (denial covers descendants)
        if item.is_dir(follow_symlinks=False):
            with tree._subdir(dfd, item.name, state) as sub:
                if sub is not None and (hit := first_denied(tree, sub, [*sparts, item.name], [*dparts, item.name], state)):
                    return hit
    return None


def tree_denied(verb: str, src: str, dst: str, path: str, pattern: str, side: str) -> ActionError:
    if side == "source":
        why = (
            f"{src!r} contains {path!r}, which policy.files.deny[{pattern!r}] denies; under the new name it would become readable"
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


@classified("copy")
def copy(
    tree: Workspace, source: str, destination: str, *, overwrite: bool = False, cancel: threading.Event | None = None
) -> CopyResult:
    """Copy a file or a directory tree. A tree is built in a hidden temporary directory and
    renamed into place at the end, so a failure or a cancel leaves nothing half-copied.
    Symbolic links, special and hard-linked files (and denied paths) are not copied.
    The total size is bounded by ``policy.files.max_write_bytes``."""
    tree.check(source)
    tree.check(destination, write=True)
    entry = tree.stat(source)
    src = entry.path
    dparts, dtrail = tree._parse(destination)
    dst = "/".join(dparts) or "."
    if entry.kind == "symlink":
        raise denied(f"{src!r} is a symbolic link; links are not followed", f"{CONFINED} (symlink)")
    if entry.kind == "other":
        raise denied(f"{src!r} is not a regular file", f"{CONFINED} (special file)")
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
        if entry.size > tree.policy.max_write_bytes:
            raise ActionError(
                "invalid_input",
                f"{src!r} is {entry.size} bytes, over the write limit of "
                f"{tree.policy.max_write_bytes} bytes (policy.files.max_write_bytes)",
                rule="policy.files.max_write_bytes",
            )
        data = tree.read_bytes(src, max_bytes=tree.policy.max_write_bytes)
        try:
            art = write_bytes(tree, dst, data, mode="overwrite" if overwrite else "create")
        except ExistsError:
            raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.") from None
        return CopyResult([art])
    if (dst + "/").startswith(src + "/") or src == ".":
        raise ActionError("invalid_input", f"cannot copy {src!r} into itself")
    sparts, _ = tree._parse(src)
    result = CopyResult()
    with tree._dir(sparts) as sfd, tree._dir(dparts[:-1], create=True) as pfd:
        target = lstat(pfd, dparts[-1])
        tree._not_state(target)
        if target is not None:
            if not overwrite:
                raise ActionError("invalid_input", f"{dst!r} already exists", hint="Pass overwrite=true to replace it.")
            if not stat.S_ISDIR(target.st_mode):
                raise ActionError("invalid_input", f"cannot replace {dst!r} with a directory: it is not one")
        tmp = temp_name()
        os.mkdir(tmp, 0o755, dir_fd=pfd)
        inherit_owner(pfd, name=tmp)
        try:
            tfd = os.open(tmp, DIR_FLAGS, dir_fd=pfd)
            try:
                budget = [tree.policy.max_write_bytes]
                _copy_tree(tree, sfd, tfd, sparts, dparts, result, budget, tree._state_id(), cancel)
            finally:
                os.close(tfd)
            commit(cancel)  # from here on, a deadline cannot stop it: it completes
            if target is not None:
                to_trash(tree, pfd, dparts[-1], dst)
            os.rename(tmp, dparts[-1], src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            with suppress(OSError):
                shutil.rmtree(tmp, dir_fd=pfd)
            raise
        os.fsync(pfd)
    return result


def _copy_tree(
    tree: ConfinedTree,
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
        cancelled(cancel)
        if is_temp(item.name):
            continue
        rel, out_rel = "/".join([*sparts, item.name]), "/".join([*dparts, item.name])
        if (pattern := tree.deny.rule(rel) or tree.deny.rule(out_rel)) is not None:
            result.denied[pattern] = result.denied.get(pattern, 0) + 1
            continue
        if item.is_dir(follow_symlinks=False):
            with tree._subdir(sfd, item.name, state) as sub:
                if sub is None:
                    continue
                os.mkdir(item.name, 0o755, dir_fd=tfd)
                inherit_owner(tfd, name=item.name)
                nfd = os.open(item.name, DIR_FLAGS, dir_fd=tfd)
                try:
                    _copy_tree(tree, sub, nfd, [*sparts, item.name], [*dparts, item.name], result, budget, state, cancel)
                finally:
                    os.close(nfd)
            continue
        if not item.is_file(follow_symlinks=False):
            result.skipped.append(rel)
            continue
        try:
            fd = tree._open_file(sfd, item.name, rel)
        except ActionError as exc:
            if exc.type == "not_found":
                continue
            result.skipped.append(rel)
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            data, size = read_fd(fd, budget[0] + 1)
        finally:
            os.close(fd)
        if size > budget[0]:
            raise ActionError(
                "invalid_input",
                f"copying {'/'.join(sparts)!r} is over the write limit of "
                f"{tree.policy.max_write_bytes} bytes (policy.files.max_write_bytes)",
                rule="policy.files.max_write_bytes",
            )
        budget[0] -= size
        wfd = os.open(item.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=tfd)
        try:
            inherit_owner(tfd, fd=wfd)
            write_all(wfd, data)
            datasync(wfd)
        finally:
            os.close(wfd)
        result.artifacts.append(Artifact(path=out_rel, mime_type=guess_mime(out_rel), size=len(data)))
    os.fsync(tfd)
