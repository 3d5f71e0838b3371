"""Run every benchmark module and write one JSON file.

Each ``bench/bench_<family>.py`` exposes ``run(iterations: int) -> dict`` (and may accept ``smoke``).
A module that raises reports its error instead of stopping the others; the exit status is then 1.
``python -m bench --report docs/benchmarks.md`` renders the page's tables and chart from the JSON.
The JSON names each peer's package, class and installed version (``_peers``) and the git commit; a run
that is not a smoke run is also kept as history, ``bench/results/<YYYY-MM-DD>-<short sha>.json``
(``_history``), which ``--report`` compares each row with.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from ._history import git_sha
from ._history import write as write_history
from ._peers import describe

MODULES = ["core", "dispatch", "imports", "files", "http", "code", "cold", "browser", "email", "flows", "budget", "scale"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="few iterations: checks the harness, not the numbers")
    parser.add_argument(
        "--only", action="append", choices=MODULES, help="run only these modules (with --report: re-render only their blocks)"
    )
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default bench/results/latest.json; with --smoke, bench/results/smoke.json)",
    )
    parser.add_argument(
        "--scale-sizes",
        type=lambda v: [int(n) for n in v.split(",")],
        default=None,
        metavar="N,N,...",
        help="concurrent sessions for the scale module (default 1,4,16,64,128; smoke 1,4)",
    )
    parser.add_argument(
        "--no-history", action="store_true", help="do not keep this run in bench/results/<date>-<sha>.json (experiments)"
    )
    parser.add_argument(
        "--report", type=Path, metavar="PAGE", help="do not run: render PAGE (docs/benchmarks.md) and its chart from results JSON"
    )
    parser.add_argument(
        "--results",
        type=Path,
        action="append",
        help="results JSON for --report (default: --out); repeat to merge, later files win per module",
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = Path("bench/results/smoke.json" if args.smoke and args.report is None else "bench/results/latest.json")
    if args.report is not None:
        from ._report import render

        return 0 if render(args.report, args.results or [args.out], args.only) else 1
    iterations = args.iterations or (20 if args.smoke else 500)
    report: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "smoke": args.smoke,
        "iterations": iterations,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "git": git_sha(),
        "peers": describe(args.only or MODULES),
        "results": {},
    }
    failed = False
    options = {"smoke": args.smoke, "sizes": args.scale_sizes}
    for name in args.only or MODULES:
        print(f"bench: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            try:
                module = importlib.import_module(f"bench.bench_{name}")
            except ModuleNotFoundError as exc:
                if exc.name == f"bench.bench_{name}":
                    print(f"bench: {name}: no such module, skipped", flush=True)
                    continue
                raise
            accepted = inspect.signature(module.run).parameters
            result = module.run(iterations, **{k: v for k, v in options.items() if k in accepted})
        except Exception as exc:
            failed = True
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
        for where in _errors(result):
            failed = True
            print(f"bench: {name}: {where}", flush=True)
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        report["results"][name] = result  # type: ignore[index]
        print(json.dumps(result, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: wrote {args.out}")
    if not args.smoke and not args.no_history:  # a smoke run's figures are not worth comparing
        print(f"bench: kept as history in {write_history(report)}")
    return 1 if failed else 0


def _errors(result: object, path: str = "") -> list[str]:
    """Parts of a module's result that are only an error (a peer that did not run, say)."""
    if not isinstance(result, dict):
        return []
    if path and set(result) == {"error"}:
        return [f"{path}: {result['error']}"]
    return [e for k, v in result.items() for e in _errors(v, f"{path}.{k}".lstrip("."))]


if __name__ == "__main__":
    raise SystemExit(main())
