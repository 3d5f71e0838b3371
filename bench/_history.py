"""The history of benchmark runs: one JSON per run in ``bench/results/``, and the change between runs.

Every run that is not a smoke run writes ``bench/results/<YYYY-MM-DD>-<short git sha>.json`` (a
second run of the same commit on the same day adds ``-2``, ``-3``...) besides ``latest.json``; these
files are committed, so a regression shows as a change between two of them. ``--report`` compares
each row with the newest earlier run that measured the same module (``previous``), and says which
run that was.

Invariants: a smoke run never writes history (its figures are not worth comparing); history files
are never rewritten; a run is "earlier" by its ``time`` field, not by its file name.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["HISTORY", "git_sha", "previous", "runs", "write"]

HISTORY = Path(__file__).resolve().parent / "results"
_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}-[0-9a-f]{4,40}(-\d+)?\.json$")


def git_sha() -> str:
    """The short sha of the checked-out commit, ``+dirty`` when the tree has changes; ``unknown`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def write(report: dict[str, Any], directory: Path = HISTORY) -> Path:
    """Write ``report`` as the next history file of its date and commit; returns its path."""
    date = str(report.get("time", "0000-00-00"))[:10]
    sha = str(report.get("git", "unknown")).split("+", 1)[0]
    sha = sha if re.fullmatch(r"[0-9a-f]{4,40}", sha) else "0000000"
    directory.mkdir(parents=True, exist_ok=True)
    path, n = directory / f"{date}-{sha}.json", 1
    while path.exists():
        n += 1
        path = directory / f"{date}-{sha}-{n}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def runs(directory: Path = HISTORY) -> list[tuple[Path, dict[str, Any]]]:
    """Every history run, oldest first (by its ``time``); unreadable files are skipped."""
    out = []
    for p in directory.glob("*.json") if directory.is_dir() else ():
        if not _NAME.match(p.name):
            continue
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and not data.get("smoke"):
            out.append((p, data))
    return sorted(out, key=lambda item: str(item[1].get("time", "")))


def previous(times: dict[str, str], directory: Path = HISTORY) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Per module (``times``: module -> when the shown run measured it): the newest earlier history
    run that measured it without an error, as (its path, that module's result)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, data in runs(directory):
        when = str(data.get("time", ""))
        for module, result in (data.get("results") or {}).items():
            if module in times and when < times[module] and isinstance(result, dict) and "error" not in result:
                found[module] = (path, result)  # later runs replace earlier ones
    return found
