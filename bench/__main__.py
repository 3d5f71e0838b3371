"""Run every benchmark module and write one JSON file.

Each ``bench/bench_<family>.py`` exposes ``run(iterations: int) -> dict``. A module whose backend is
missing reports its error instead of stopping the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

MODULES = ["core", "files", "http", "code", "browser", "email"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="few iterations: checks the harness, not the numbers")
    parser.add_argument("--only", action="append", choices=MODULES, help="run only these modules")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args()
    iterations = args.iterations or (20 if args.smoke else 500)
    report: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "smoke": args.smoke,
        "iterations": iterations,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "results": {},
    }
    failed = False
    for name in args.only or MODULES:
        try:
            module = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.bench_{name}":
                continue
            raise
        print(f"bench: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = module.run(iterations)
        except Exception as exc:
            failed = True
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        report["results"][name] = result  # type: ignore[index]
        print(json.dumps(result, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
