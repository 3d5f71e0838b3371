"""Temporary names of interrupted writes and copies, and the sweep that removes abandoned ones.

Atomic writes and tree copies build their result under a hidden temporary name and rename it into place;
a process killed in between leaves that name behind. Our names are ``<prefix><owner tag>-<pid>-<random>``:
the tag names the pid namespace (host name + pid namespace inode), so a sweep judges "is the owner
alive?" only for processes it can see; other temporary names (older versions, other hosts or containers)
only by age.

Invariants: the sweep removes only names of our exact pattern, and only when the owner is provably gone
or the name is older than the grace period and not ours; it walks by directory descriptors (no link
followed, the state directory skipped), at most ``max_entries`` entries, and never raises. Temporary names
are never reachable by a model-given path (``_paths`` refuses them whatever their case).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._fd import DIR_FLAGS

if TYPE_CHECKING:
    from ._paths import ConfinedTree

__all__ = [
    "SWEEP_GRACE_S",
    "SWEEP_MAX_ENTRIES",
    "TMP_NAME",
    "TMP_PREFIX",
    "SweepResult",
    "is_temp",
    "owner_tag",
    "start_sweep",
    "sweep",
    "temp_name",
]

log = logging.getLogger("agent_legs")

TMP_PREFIX = ".agent-legs-tmp-"
TMP_NAME = re.compile(r"\A\.agent-legs-tmp-(?:([0-9a-f]{8})-(\d+)-)?[0-9a-f]{12}\Z")
SWEEP_GRACE_S = 3600.0
SWEEP_MAX_ENTRIES = 1_000_000


@dataclass(slots=True)
class SweepResult:
    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    complete: bool = True
    """False if the walk stopped at its entry cap (a huge workspace): the rest waits for next time."""


@functools.cache
def owner_tag() -> str:
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return hashlib.sha256(f"{os.uname().nodename}/{ns}".encode()).hexdigest()[:8]


def temp_name() -> str:
    return f"{TMP_PREFIX}{owner_tag()}-{os.getpid()}-{secrets.token_hex(6)}"


def is_temp(name: str) -> bool:
    """Our temporary names, whatever their case (a case-insensitive file system aliases them)."""
    return name[: len(TMP_PREFIX)].lower() == TMP_PREFIX


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def _stale(name: str, mtime: float, now: float, grace_s: float) -> bool:
    """Whether a temporary name is abandoned: its owner (in our pid namespace) is dead, or it is
    older than the grace period and not ours. Names not of our exact pattern are never touched."""
    m = TMP_NAME.match(name)
    if m is None:
        return False
    tag, pid = m.group(1), m.group(2)
    if tag == owner_tag() and pid is not None:
        if int(pid) == os.getpid():
            return False  # ours, in progress (an operation in this process never takes an hour)
        if not _pid_alive(int(pid)):
            return True
    return now - mtime > grace_s


def _tree_size(dfd: int, name: str) -> int:
    total = 0
    with suppress(OSError):
        fd = os.open(name, DIR_FLAGS, dir_fd=dfd)
        try:
            for _, _, files, sub in os.fwalk(dir_fd=fd):
                for f in files:
                    with suppress(OSError):
                        total += os.lstat(f, dir_fd=sub).st_size
        finally:
            os.close(fd)
    return total


def sweep(tree: ConfinedTree, *, grace_s: float = SWEEP_GRACE_S, max_entries: int = SWEEP_MAX_ENTRIES) -> SweepResult:
    """Remove the abandoned temporary files and directories under ``tree``'s root (see the module)."""
    result = SweepResult()
    budget = [max_entries]
    try:
        fd = os.open(tree.root, DIR_FLAGS)
    except OSError:
        return result
    try:
        _sweep(tree, fd, "", tree._state_id(), time.time(), grace_s, budget, result)
    finally:
        os.close(fd)
    return result


def _sweep(
    tree: ConfinedTree,
    dfd: int,
    rel: str,
    state: tuple[int, int] | None,
    now: float,
    grace_s: float,
    budget: list[int],
    result: SweepResult,
) -> None:
    try:
        with os.scandir(dfd) as it:
            items = list(it)
    except OSError:
        return
    for item in items:
        budget[0] -= 1
        if budget[0] < 0:
            result.complete = False
            return
        path = f"{rel}/{item.name}" if rel else item.name
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:
            continue
        if item.name.startswith(TMP_PREFIX):
            if _stale(item.name, st.st_mtime, now, grace_s):
                try:
                    if stat.S_ISDIR(st.st_mode):
                        size = _tree_size(dfd, item.name)
                        shutil.rmtree(item.name, dir_fd=dfd)
                    else:
                        size = st.st_size
                        os.unlink(item.name, dir_fd=dfd)
                except OSError:
                    continue
                result.removed.append(path)
                result.bytes += size
            continue
        if stat.S_ISDIR(st.st_mode):
            with tree._subdir(dfd, item.name, state) as sub:
                if sub is not None:
                    _sweep(tree, sub, path, state, now, grace_s, budget, result)


def start_sweep(tree: ConfinedTree) -> threading.Thread:
    """``sweep`` in a background thread (the first use of a workspace must not wait for a walk of a
    large tree); its result is logged. ``join()`` the thread to wait for it."""

    def run() -> None:
        try:
            result = sweep(tree)
        except Exception:  # never let housekeeping disturb the agent
            log.warning("sweeping temporary files in %s failed", tree.root, exc_info=True)
            return
        if result.removed:
            log.warning(
                "removed %d temporary file(s) (%d bytes) that interrupted writes left in %s",
                len(result.removed),
                result.bytes,
                tree.root,
            )

    thread = threading.Thread(target=run, name="agent-legs-sweep", daemon=True)
    thread.start()
    return thread
