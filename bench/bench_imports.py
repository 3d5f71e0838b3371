"""Import time: a fresh Python process that imports Agent Legs, timed from outside, against a bare interpreter
and LangChain's ``langchain_core.tools``.

Each case is a whole process (interpreter start-up included, as a user's script or CLI pays it), started
``iterations`` times in alternating rounds so that a drift of the machine's speed hits every case alike; the
median is the figure. Cases: ``python -c pass``; ``import agent_legs`` (the package: errors and version, every
other name on first use); ``from agent_legs import Legs`` (runtime, telemetry, asyncio); the catalogue
(``Legs(...)`` built and its actions listed: every family's input models, no backend; ``bench_cold``
times ``Legs()`` with a policy naming one family, which imports that family alone); and the peer. ``importtime_top`` lists the
modules with the largest cumulative time under ``python -X importtime`` for ``from agent_legs import Legs``
and for the catalogue (one run each; that flag slows imports, read the ranking, not the numbers).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CATALOGUE = (  # the listing imports every family (Legs() alone imports only those its policy names)
    "import tempfile, os; from agent_legs import Legs; d = tempfile.mkdtemp(); "
    "legs = Legs(workspace=os.path.join(d, 'ws'), state_dir=os.path.join(d, 'st')); legs.actions; legs.close()"
)
CASES = {
    "python_bare": "pass",
    "import_agent_legs": "import agent_legs",
    "from_agent_legs_import_legs": "from agent_legs import Legs",
    "legs_catalogue": CATALOGUE,
    "langchain_core_tools": "import langchain_core.tools",
}


def _once(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t


def _importtime_top(code: str, n: int = 8) -> list[dict[str, Any]]:
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120, check=True)
    rows = []
    for line in p.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            rows.append({"module": name.strip(), "cumulative_us": int(parts[1]), "depth": depth})
    # the direct children of the top level and of agent_legs: where the time goes
    return sorted((r for r in rows if r["depth"] <= 2), key=lambda r: -r["cumulative_us"])[:n]


def run(iterations: int, smoke: bool = False) -> dict[str, Any]:
    rounds = 3 if smoke else max(5, min(iterations // 25, 20))
    with tempfile.TemporaryDirectory():
        samples: dict[str, list[float]] = {k: [] for k in CASES}
        for code in CASES.values():
            _once(code)  # warm the file system cache
        for _ in range(rounds):
            for name, code in CASES.items():
                samples[name].append(_once(code))
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    result: dict[str, Any] = {
        name: {"n": len(v), "p50_us": round(med[name], 1), "min_us": round(min(v) * 1e6, 1), "max_us": round(max(v) * 1e6, 1)}
        for name, v in samples.items()
    }
    result["import_agent_legs_over_bare_us"] = round(med["import_agent_legs"] - med["python_bare"], 1)
    result["importtime_top"] = {
        "from_agent_legs_import_legs": _importtime_top(CASES["from_agent_legs_import_legs"]),
        "legs_catalogue": _importtime_top(CATALOGUE),
    }
    result["targets"] = {"import_agent_legs_p50_ms<=250": med["import_agent_legs"] <= 250_000}
    result["notes"] = (
        "whole processes, interpreter start-up included; median of alternating rounds; "
        "legs_catalogue builds a Legs and lists its actions (every family's models registered, no backend imported)"
    )
    return result
