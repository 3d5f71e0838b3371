"""In-process A/B of the no-op pipeline: ``CallPipeline.execute`` of an older commit against this tree's.

``python -m bench.ab_core REF [ROUNDS] [CALLS]`` (``NEWREF=<commit>`` compares two commits instead of
REF and the tree). The pipeline and telemetry modules of REF are read with ``git show`` and loaded
beside this tree's under other names (their relative imports of each other renamed, the rest of
``agent_legs`` shared), then both pipelines run the same no-op action on the same runtime loop in
alternating rounds (ROUNDS rounds of CALLS calls each, the order swapped every round). What is
printed: the median over rounds of each side's p50 wall time and CPU time per call, and the median
of the neighbour differences (old minus new: positive is a saving). Load that comes and goes hits
both sides alike, which whole-run comparisons on a shared 2-core machine do not give (issue 20,
item 5). Not part of ``python -m bench``: it measures changes, not the product.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from opentelemetry import context

from agent_legs import Legs

from .bench_core import registry

ROOT = Path(__file__).resolve().parent.parent
SRC = "packages/agent-legs/src/agent_legs/"
# The modules a pipeline change touches, in import order (each may import the earlier ones).
MODULES = [
    ("_telemetry/_records.py", "agent_legs._telemetry"),
    ("_telemetry/_log_writer.py", "agent_legs._telemetry"),
    ("_telemetry/_journal.py", "agent_legs._telemetry"),
    ("_telemetry/_export.py", "agent_legs._telemetry"),
    ("_telemetry/_spans.py", "agent_legs._telemetry"),
    ("_telemetry/_facade.py", "agent_legs._telemetry"),
    ("_arguments.py", "agent_legs"),
    ("_pipeline.py", "agent_legs"),
]


def load(ref: str, tag: str) -> dict[str, types.ModuleType]:
    """The MODULES of commit ``ref``, loaded as ``<package>._<tag>_<name>``."""
    import agent_legs._telemetry  # noqa: F401 - the packages the copies load into

    names = {Path(m).stem: Path(m).stem.replace("_", f"_{tag}_", 1) for m, _ in MODULES}
    out: dict[str, types.ModuleType] = {}
    for path, package in MODULES:
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{SRC}{path}"], capture_output=True, text=True)
        if shown.returncode != 0:
            continue  # not in that commit: the tree's own module serves both
        src = shown.stdout
        for old, new in names.items():
            src = re.sub(rf"(from \.+(?:_telemetry\.)?){old}\b", rf"\g<1>{new}", src)
            src = re.sub(rf"(from \.+_telemetry)\.{old}\b", rf"\g<1>.{new}", src)
        src = src.replace(
            "from ._telemetry import CallRecord, Telemetry",
            f"from ._telemetry._{tag}_records import CallRecord\nfrom ._telemetry._{tag}_facade import Telemetry",
        )
        name = f"{package}.{names[Path(path).stem]}"
        module = types.ModuleType(name)
        module.__package__, module.__file__ = package, f"<{ref}:{path}>"
        sys.modules[name] = module
        exec(compile(src, f"<{ref}:{path}>", "exec"), module.__dict__)  # our own repository's code, from git
        out[Path(path).stem] = module
    return out


def main(ref: str, rounds: int, calls: int) -> None:
    old = load(ref, "abold")
    newref = os.environ.get("NEWREF")
    new = load(newref, "abnew") if newref else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Legs(workspace=root / "ws", state_dir=root / "st", policy={"allow": ["bench.*"]}, registry=registry) as legs:
            runtime, tree = legs._runtime, legs._pipeline

            def pipeline(modules: dict[str, types.ModuleType], name: str) -> Any:
                (root / name).mkdir()
                telemetry = modules["_facade"].Telemetry(legs.settings.telemetry, root / name, runtime.redactor)
                return modules["_pipeline"].CallPipeline(runtime, telemetry, tree.approvals, tree._approver), telemetry

            old_p, old_t = pipeline(old, "st-old")
            new_p, new_t = pipeline(new, "st-new") if new else (tree, None)
            spec = legs.get_action("bench.hop")

            async def one(p: Any, n: int) -> tuple[float, float]:
                execute, parent, clock, walls = p.execute, context.get_current(), time.perf_counter, []
                cpu = time.thread_time()
                for _ in range(n):
                    t = clock()
                    await execute(spec, {"text": "x"}, "s", None, parent)
                    walls.append(clock() - t)
                return statistics.median(walls) * 1e6, (time.thread_time() - cpu) / n * 1e6

            async def alternate() -> dict[str, list[tuple[float, float]]]:
                await one(old_p, 2000)
                await one(new_p, 2000)
                out: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
                for r in range(rounds):
                    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                        out[side].append(await one(old_p if side == "old" else new_p, calls))
                return out

            res = asyncio.run_coroutine_threadsafe(alternate(), runtime.loop).result()
            for t in (old_t, new_t):
                if t is not None:
                    t.shutdown()
    o, n = res["old"], res["new"]
    wall = statistics.median(a[0] - b[0] for a, b in zip(o, n, strict=True))
    cpu = statistics.median(a[1] - b[1] for a, b in zip(o, n, strict=True))
    print(
        f"{ref} -> {newref or 'tree'}, {rounds} rounds x {calls} calls, load {os.getloadavg()[0]:.1f}: "
        f"old p50 {statistics.median(x[0] for x in o):.2f} us (CPU {statistics.median(x[1] for x in o):.2f} us), "
        f"new p50 {statistics.median(x[0] for x in n):.2f} us (CPU {statistics.median(x[1] for x in n):.2f} us); "
        f"saved per call: p50 {wall:+.2f} us, CPU {cpu:+.2f} us"
    )


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "main",
        int(sys.argv[2]) if len(sys.argv) > 2 else 60,
        int(sys.argv[3]) if len(sys.argv) > 3 else 300,
    )
