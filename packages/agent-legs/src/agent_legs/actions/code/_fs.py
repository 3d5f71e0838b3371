"""What the code sandbox may do to the host's workspace: who it runs as, what it cannot read, and
what it cannot leave behind.

Threat model: the code in the sandbox is the attacker's (a fully prompt-injected model). It can
write anything under ``/workspace`` and keep threads running between calls. The host side (this
module, running as the operator, often root) must never follow a path the code controls.

* **Who the sandbox is** (``prepare_workspace``). A workspace owned by a non-root user is worked on as that
  user (the operator gave the directory to that account). A root-owned workspace is worked on as
  ``settings.code.uid`` (default 1000), which gets a POSIX ACL entry (rwx, rx on a read-only workspace)
  on every directory of the workspace; files are never chowned and their modes never change, so an
  operator's 0600 file stays unreadable to the code. Files Agent Legs writes inherit the grant
  (``files._owner.inherit_owner``), or, when written before the sandbox first started, get it then
  (they carry a root-only ``trusted.*`` mark), so code can edit them; private ones (no group or
  other bits) excepted. gVisor (runsc) ignores ACLs: a root-owned
  workspace is refused there (give the workspace to the account the sandbox should act as).
* **Denied paths are masked** (``scan`` + ``mounts``). Every path that ``policy.files.deny`` matches
  (the files layer's own matcher, ``Workspace.check``) is covered in the container by a read-only
  bind mount of an empty, mode-0 file or directory; so is every other name of a hard-linked denied
  file. A mask cannot be renamed, unlinked, replaced, written or hard-linked (EBUSY, EROFS, EXDEV);
  a symbolic link to it resolves to the mask in the container (and the host's files layer never
  follows links). The masks are fixed when the container starts: ``scan`` before each call tells the
  caller when a denied path appeared (a new one, or a new file at a masked name), and the kernel is
  then replaced before the code runs. The code can rename a directory *above* a masked file: in the
  container the mask moves with it, and a file once seen denied stays masked by identity (device,
  inode, mtime) wherever it moves (``scan(known=...)``), but on the host it now has a new path.
* **No set-id bit survives a call** (``scan`` strips). After (and before) each call, and every few
  seconds while a kernel lives (a thread left running may set one between calls), every file and
  directory of the sandbox's user that carries a setuid or setgid bit loses it. The host walk
  never follows a link: directories are opened relative to their parent with ``O_NOFOLLOW``, and each
  candidate is re-checked with ``fstat`` on its own descriptor before ``fchmod``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ... import _acl
from ..._errors import ActionError
from ..files._paths import ConfinedTree  # (the files layer's path checks alone: light to import)

__all__ = ["MAX_MASKS", "MaskSources", "Masks", "Scan", "mounts", "prepare_workspace", "scan", "strip_setid"]

log = logging.getLogger("agent_legs.code")

MAX_MASKS = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID
_DENY_RULE = "policy.files.deny"


def prepare_workspace(root: str, uid: int, *, read_only: bool, runtime: str) -> tuple[int, int]:
    """The user:group the sandbox runs as; for a root-owned workspace, ACL grants to ``uid``."""
    st = os.stat(root)
    if st.st_uid != 0:
        return st.st_uid, st.st_gid
    if runtime == "runsc":
        raise ActionError(
            "unavailable",
            f"the workspace {root} is owned by root, and under gVisor (settings.code.runtime = 'runsc') the sandbox "
            f"can only be let in by ownership (gVisor ignores POSIX ACLs); refusing to chown the operator's files",
            hint=f"Give the workspace directory to the account the sandbox should act as (e.g. chown {uid}:{uid} "
            f"{root}), or use settings.code.runtime = 'runc'.",
        )
    if os.geteuid() != 0:
        return uid, uid  # not ours to change: the sandbox gets what 'other' may do
    perm = 5 if read_only else 7
    try:
        for _, _, filenames, dfd in os.fwalk(root, follow_symlinks=False):
            _acl.grant(dfd, uid, perm)
            if not read_only:
                for name in filenames:
                    _grant_written(dfd, name, uid)
    except _acl.AclUnsupported:
        raise ActionError(
            "unavailable",
            f"the file system of the workspace {root} does not support POSIX ACLs, through which the sandbox's user "
            f"(uid {uid}) gets access to a root-owned workspace without taking the operator's files",
            hint="Put the workspace on a file system with ACLs (ext4, xfs, btrfs, tmpfs), or give the workspace "
            "directory to the account the sandbox should act as (chown).",
        ) from None
    return uid, uid


def _grant_written(dfd: int, name: str, uid: int) -> None:
    """A file Agent Legs wrote before the sandbox's first start (marked, see ``_acl.WRITTEN``)
    becomes editable by the sandbox's user, unless it is private; the operator's files are not touched."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or not st.st_mode & 0o077:
            return
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return
    try:
        if _acl.written(fd) and stat.S_ISREG(os.fstat(fd).st_mode):
            _acl.grant(fd, uid, 6)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Masks:
    """Denied paths present in the workspace, by identity: (relative path, device, inode, mtime, is a
    directory). A file replaced at a masked name (even on a reused inode) or modified is new: the mask
    was on the old one."""

    entries: frozenset[tuple[str, int, int, int, bool]] = frozenset()

    def covers(self, other: Masks) -> bool:
        return other.entries <= self.entries

    def new_paths(self, other: Masks) -> list[str]:
        return sorted({rel for rel, *_ in other.entries - self.entries})


@dataclass
class Scan:
    masks: Masks = field(default_factory=Masks)
    setid_removed: list[str] = field(default_factory=list)


_UNNAMEABLE = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff]")


def _denied(ws: ConfinedTree, rel: str) -> bool:
    """Whether ``policy.files.deny`` matches ``rel``, by the files layer's own matcher. A name the files
    layer refuses to parse (undecodable bytes, control characters, a backslash, a leading '~' or
    drive letter) is matched with those characters replaced: files.* never reads it, but code could."""
    name = _UNNAMEABLE.sub("\ufffd", rel)
    if name.startswith("~") or re.match(r"[A-Za-z]:", name):
        name = "\ufffd" + name[1:]
    try:
        ws.check(name)
    except ActionError as exc:
        return (exc.rule or "").startswith(_DENY_RULE)
    return False


def scan(
    root: str, ws: ConfinedTree, *, sandbox_uid: int, deny: bool = True, known: set[tuple[int, int, int]] | None = None
) -> Scan:
    """One walk of the workspace: the denied paths to mask, and set-id bits stripped from the
    sandbox user's entries. Never follows a symbolic link; entries that vanish meanwhile are skipped.
    ``known``: identities (device, inode, mtime) of files seen denied before; they stay masked under any
    name, and the ones found now are added to it."""
    out = Scan()
    denied: set[tuple[str, int, int, int, bool]] = set()
    denied_inodes: set[tuple[int, int, int]] = set(known or ())
    linked: list[tuple[str, int, int, int]] = []
    deny = deny and bool(ws.policy.deny)
    try:
        walker = os.fwalk(root, follow_symlinks=False)
        for dirpath, dirnames, filenames, dfd in walker:
            reldir = os.path.relpath(dirpath, root)
            reldir = "" if reldir == "." else reldir + "/"
            keep = []
            for name in [*dirnames, *filenames]:
                rel = reldir + name
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if st.st_mode & _SETID and st.st_uid == sandbox_uid and _strip(dfd, name, is_dir):
                    out.setid_removed.append(rel)
                if deny and (_denied(ws, rel) or (st.st_dev, st.st_ino, st.st_mtime_ns) in denied_inodes):
                    denied.add((rel, st.st_dev, st.st_ino, 0 if is_dir else st.st_mtime_ns, is_dir))
                    if not is_dir:
                        denied_inodes.add((st.st_dev, st.st_ino, st.st_mtime_ns))
                    continue  # a masked directory is not entered: all of it is hidden
                if is_dir:
                    if name in dirnames:
                        keep.append(name)
                elif st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
                    linked.append((rel, st.st_dev, st.st_ino, st.st_mtime_ns))
            dirnames[:] = keep
    except OSError as exc:  # the root itself vanished or is unreadable: nothing to mask or strip
        log.warning("sandbox workspace scan failed: %s", exc)
    for rel, dev, ino, mtime in linked:  # other names of a denied file are as secret as the file
        if (dev, ino, mtime) in denied_inodes:
            denied.add((rel, dev, ino, mtime, False))
    out.masks = Masks(frozenset(denied))
    if known is not None:
        known |= denied_inodes
    return out


def _strip(dfd: int, name: str, is_dir: bool) -> bool:
    """Clear setuid/setgid on ``name`` in ``dfd``, re-checked on its own descriptor (no link follows)."""
    flags = _DIR_FLAGS if is_dir else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_NOCTTY, dir_fd=dfd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not st.st_mode & _SETID or stat.S_ISLNK(st.st_mode):
            return False
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~_SETID)
        return True
    except OSError as exc:
        log.warning("cannot clear set-id bits of %r: %s", name, exc)
        return False
    finally:
        os.close(fd)


def strip_setid(root: str, ws: ConfinedTree, *, sandbox_uid: int) -> list[str]:
    """Set-id bits stripped from the sandbox user's workspace entries (relative paths)."""
    return scan(root, ws, sandbox_uid=sandbox_uid, deny=False).setid_removed


class MaskSources:
    """An empty file and an empty directory (mode 0, root's) that masks are bind mounts of."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="agent-legs-mask-")
        self.file = os.path.join(self.dir, "file")
        self.empty_dir = os.path.join(self.dir, "dir")
        with open(os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0), "wb"):
            pass
        os.mkdir(self.empty_dir, 0)
        os.chmod(self.file, 0)
        os.chmod(self.empty_dir, 0)

    def close(self) -> None:
        for path in (self.file,):
            with contextlib.suppress(OSError):
                os.unlink(path)
        for path in (self.empty_dir, self.dir):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def mounts(masks: Masks, sources: MaskSources) -> list[dict[str, Any]]:
    """The engine's mounts hiding ``masks`` (``HostConfig.Mounts``): each denied path covered read-only
    by an empty mode-0 file or directory."""
    if len(masks.entries) > MAX_MASKS:
        raise ActionError(
            "denied",
            f"the workspace holds {len(masks.entries)} paths matching policy.files.deny, more "
            f"than the {MAX_MASKS} that can be hidden from the sandbox; refusing to run code that "
            "could read them",
            rule=_DENY_RULE,
            hint="Move the denied files out of the workspace (or narrow policy.files.deny).",
        )
    for rel, *_ in masks.entries:
        try:
            rel.encode()
        except UnicodeEncodeError:  # the engine's API speaks JSON strings: such a name cannot be a mount point
            raise ActionError(
                "denied",
                f"{rel!r} matches policy.files.deny but its name is not valid UTF-8, so it "
                "cannot be hidden from the sandbox; refusing to run code that could read it",
                rule=_DENY_RULE,
                hint="Ask the operator to rename or remove that file.",
            ) from None
    return [
        {"Target": f"/workspace/{rel}", "Source": sources.empty_dir if is_dir else sources.file, "Type": "bind", "ReadOnly": True}
        for rel, *_, is_dir in sorted(masks.entries)
    ]
