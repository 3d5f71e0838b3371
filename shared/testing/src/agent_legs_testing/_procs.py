"""Process-tree walks over Linux ``/proc`` for tests and benchmarks: what a test started, and what is left.

Only descendants of a given process (or one process group) are looked at: other processes on the machine
(another engineer's browser, a CI job next to us) are none of a test's business.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["children_map", "chromium_pids", "comm", "descendants", "process_group", "running"]


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/PID/stat`` after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children_map() -> dict[int, list[int]]:
    """Parent PID -> its children's PIDs, for every process now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(entry.name)[1]), []).append(int(entry.name))
    return children


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (children, grandchildren, ...), not ``root`` itself."""
    children = children_map()
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def comm(pid: int) -> str:
    """The process's executable name, ``""`` when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def process_group(pgid: int) -> set[int]:
    """The live (non-zombie) members of process group ``pgid``."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = _stat_fields(entry.name)
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.add(int(entry.name))
    return out


def chromium_pids(root: int | None = None) -> set[int]:
    """Chromium processes below ``root`` (default: this process), by executable name."""
    return {pid for pid in descendants(root or os.getpid()) if "chrom" in comm(pid)}
