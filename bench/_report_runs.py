"""The report's view of runs: the peers measured (package, class, version), the history of runs, and
the previous run each module's rows are compared with (see ``_history``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._format import table
from ._history import HISTORY, previous, runs

__all__ = ["history", "peers", "previous_results"]


def previous_results(sources: list[Path], directory: Path = HISTORY) -> tuple[dict[str, Any], dict[str, Path]]:
    """Per module shown (the last of ``sources`` that has it wins, as in ``merge``): the previous run's
    result of that module, and which history file it came from."""
    times: dict[str, str] = {}
    for src in sources:
        data = json.loads(src.read_text())
        for module in data.get("results", {}):
            times[module] = str(data.get("time", ""))
    found = previous(times, directory)
    return {m: r for m, (_, r) in found.items()}, {m: p for m, (p, _) in found.items()}


def peers(report: dict[str, Any]) -> str:
    """Each peer: the module that measures it, its case, package, class and the version that ran."""
    info = report.get("peers") or {}
    rows = [
        [module, f"`{p['case']}`", f"`{p['package']}`", f"`{p['class']}`", p["version"]]
        for module, entries in (info.get("modules") or {}).items()
        for p in entries
    ]
    if not rows:
        return "The results do not name their peers (a run older than the peer table): re-run `python -m bench`."
    return f"Agent Legs {info.get('agent-legs', '?')} against:\n\n" + table(
        ["module", "case", "package", "class or function", "version"], rows
    )


def history(used: dict[str, Path], directory: Path = HISTORY, last: int = 12) -> str:
    """The newest ``last`` runs kept in ``bench/results/``, and which one each module is compared with."""
    kept = runs(directory)[-last:]
    if not kept:
        return "No history yet: every `python -m bench` run that is not a smoke run is kept in `bench/results/`."
    rows = [
        [
            f"`{path.name}`",
            str(data.get("time", "?")),
            str(data.get("git", "?")),
            ", ".join(data.get("results", {})),
            ", ".join(m for m, p in used.items() if p == path) or "",
        ]
        for path, data in reversed(kept)
    ]
    return table(["run", "measured", "commit", "modules", "compared with (this page)"], rows)
