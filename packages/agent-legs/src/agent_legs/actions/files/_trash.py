"""The trash: deletes (and replaced targets of moves, copies, restores) are recoverable moves.

An item is moved to ``<state_dir>/trash/<timestamp>-<id>/item`` with a ``manifest.json`` beside it (the
original path, kind, size, workspace, time), so the operator can list (``agent-legs trash``) and
``restore`` it. The state directory is outside the workspace, so nothing in the trash is reachable by
a model-given path.

Invariants: the item is moved by a rename relative to the directory descriptor the confined walk reached
(across file systems: copied from an ``O_NOFOLLOW`` descriptor, then removed), so a swapped-in link is
never followed; a slot whose move failed is removed, a slot whose item arrived is never removed (that
would lose the item); a restore refuses an existing target unless ``overwrite`` (which trashes the target
first) and checks the destination like any model-given path.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..._errors import ActionError
from ._errors import after_commit, classified, resource_error
from ._fd import DIR_FLAGS, kind_of, lstat, write_all, write_json
from ._paths import ConfinedTree

__all__ = ["TRASH_ID", "copy_across", "delete", "list_trash", "restore", "to_trash", "trash_dir"]

TRASH_ID = re.compile(r"\A\d{8}T\d{6}-[0-9a-f]{8}\Z")


def trash_dir(tree: ConfinedTree) -> Path:
    return tree.state_dir / "trash"


@classified("delete")
def delete(tree: ConfinedTree, path: str, *, recursive: bool = False) -> str:
    """Move to the trash in the state directory; returns the trash id (for ``restore``)."""
    tree.check(path, write=True)
    parts, trailing = tree._parse(path)
    rel = "/".join(parts)
    if not parts:
        raise ActionError("invalid_input", "cannot delete the workspace root")
    with tree._dir(parts[:-1]) as dfd:
        st = lstat(dfd, parts[-1])
        tree._not_state(st)
        if st is None:
            raise ActionError("not_found", f"{rel!r} does not exist", hint="Use files_list to see what exists.")
        if trailing and not stat.S_ISDIR(st.st_mode):
            raise ActionError("invalid_input", f"{path!r} ends with '/' but {rel!r} is not a directory")
        if stat.S_ISDIR(st.st_mode) and not recursive:
            with tree._subdir(dfd, parts[-1], tree._state_id()) as sub:
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
        trash_id = to_trash(tree, dfd, parts[-1], rel)
        os.fsync(dfd)
        return trash_id


def to_trash(tree: ConfinedTree, dfd: int, name: str, rel: str) -> str:
    """Move ``name`` (in ``dfd``) to a new trash slot with a manifest; returns the slot id."""
    st = os.lstat(name, dir_fd=dfd)
    trash_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
    slot = trash_dir(tree) / trash_id
    try:
        slot.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise resource_error(exc, "move to the trash", rel, disk="the state directory's disk") or exc from None
    manifest = {
        "trash_id": trash_id,
        "path": rel,
        "kind": kind_of(st.st_mode),
        "size": st.st_size,
        "workspace": str(tree.root),
        "deleted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    moved = False
    try:
        write_json(slot / "manifest.json", manifest)
        tfd = os.open(slot, DIR_FLAGS)
        try:
            try:
                os.rename(name, "item", src_dir_fd=dfd, dst_dir_fd=tfd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                copy_across(dfd, name, tfd)  # state dir on another filesystem
            moved = True
            os.fsync(tfd)
        finally:
            os.close(tfd)
    except OSError as exc:
        if moved:  # the item is in the slot now: keep it (removing the slot would lose it)
            raise after_commit(rel, f"moved to the trash (id {trash_id})", exc) from None
        shutil.rmtree(slot, ignore_errors=True)
        raise resource_error(exc, "move to the trash", rel, disk="the state directory's disk") or exc from None
    except BaseException:
        if not moved:
            shutil.rmtree(slot, ignore_errors=True)
        raise
    return trash_id


def list_trash(tree: ConfinedTree) -> list[dict[str, Any]]:
    """Manifests of the items in the trash, newest first (for the operator)."""
    out = []
    with suppress(FileNotFoundError):
        for slot in trash_dir(tree).iterdir():
            with suppress(OSError, ValueError):
                out.append(json.loads((slot / "manifest.json").read_text(encoding="utf-8")))
    return sorted(out, key=lambda m: str(m.get("trash_id", "")), reverse=True)


@classified("restore")
def restore(tree: ConfinedTree, trash_id: str, *, destination: str | None = None, overwrite: bool = False) -> str:
    """Put a trashed item back at its original path (or ``destination``); returns the path."""
    if not TRASH_ID.match(trash_id):
        raise ActionError("invalid_input", f"not a trash id: {trash_id!r}")
    slot = trash_dir(tree) / trash_id
    try:
        manifest = json.loads((slot / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ActionError("not_found", f"nothing in the trash with id {trash_id!r}") from None
    rel = tree.check(destination or manifest["path"], write=True)
    parts, _ = tree._parse(rel)
    if not parts:
        raise ActionError("invalid_input", "cannot restore onto the workspace root")
    tfd = os.open(slot, DIR_FLAGS)
    try:
        with tree._dir(parts[:-1], create=True) as dfd:
            target = lstat(dfd, parts[-1])
            tree._not_state(target)
            if target is not None:
                if not overwrite:
                    raise ActionError(
                        "invalid_input", f"{rel!r} already exists", hint="Pass overwrite=True or another destination."
                    )
                to_trash(tree, dfd, parts[-1], rel)
            os.rename("item", parts[-1], src_dir_fd=tfd, dst_dir_fd=dfd)
            os.fsync(dfd)
    finally:
        os.close(tfd)
    shutil.rmtree(slot, ignore_errors=True)
    return rel


def copy_across(dfd: int, name: str, tfd: int) -> None:
    """Move ``name`` to ``tfd``/item across filesystems without following a swapped-in symlink:
    the source is pinned by an O_NOFOLLOW descriptor before copying."""
    st = os.lstat(name, dir_fd=dfd)
    if stat.S_ISDIR(st.st_mode):
        sfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
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
                    write_all(wfd, chunk)
                os.fsync(wfd)
            finally:
                os.close(wfd)
        finally:
            os.close(sfd)
        os.unlink(name, dir_fd=dfd)
