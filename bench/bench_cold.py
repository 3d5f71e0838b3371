"""Cold start, measured the way sandbox vendors are compared (create -> first command), and close.

Each case of ``create_to_first_command`` is a whole new Python process, started in alternating rounds:

* ``agent_legs_prestart``: ``from agent_legs import Legs``; ``Legs(ws, st, policy={"allow": ["code.*"]})``
  (``settings.code.prestart = "auto"``: the sandbox starts in the background at once); the first
  ``legs.run("code.run", {"code": "print(1+1)"})``; ``legs.close()``;
* ``agent_legs_no_prestart``: the same with ``prestart = false`` (the first call starts the sandbox);
* ``..._model_think_1s``: both again with a 1 s pause between ``Legs()`` and the first call (an
  agent's model answering first), the pause not counted: what prestarting buys a real agent;
* ``autogen_ext_DockerCommandLineCodeExecutor``: ``start()`` + the first ``execute_code_blocks``, then ``stop()``;
* ``llm_sandbox_SandboxSession``: ``open()`` + the first ``run``, then ``close()``.

The figure of each case (its p50/p95 row) is create -> first command's result, timed inside the process
after the imports: for Agent Legs ``Legs()`` + the first ``code.run``, for a peer its start + its
first command. Beside it: the import, ``Legs()`` alone, the first call alone, close/stop, and the
whole process's wall time seen from outside (interpreter start-up, imports, and the exit, which for
Agent Legs waits for the containers' removal). Same engine and image for all (agent-legs-sandbox:latest).

``close_repeated``: in one process, ``Legs()`` + a first ``code.run`` + ``close()`` again and again:
``close()`` p50/p95 (kernels killed, containers removed in the background) and, once all those
removals are done, how many of the process's containers are left (must be 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._stats import summarize

IMAGE = "agent-legs-sandbox:latest"
THINK_S = 1.0  # the "model_think" cases: a pause between Legs() and the first code.run, not counted

OURS = """
import json, sys, time
t0 = time.perf_counter()
from agent_legs import Legs
t1 = time.perf_counter()
prestart = sys.argv[3] == "auto" and "auto"
legs = Legs(sys.argv[1], sys.argv[2], policy={"allow": ["code.*"]}, settings={"code": {"prestart": prestart}})
t2 = time.perf_counter()
time.sleep(float(sys.argv[4]))  # the agent's model answering before its first code.run (0 or 1 s): not counted
t2b = time.perf_counter()
r = legs.run("code.run", {"code": "print(1+1)"})
t3 = time.perf_counter()
assert r.ok and r.data["stdout"] == "2\\n", r
legs.close()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "create_s": t2 - t1, "first_s": t3 - t2b, "close_s": t4 - t3}))
"""

AUTOGEN = """
import asyncio, json, os, sys, tempfile, time
t0 = time.perf_counter()
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor
t1 = time.perf_counter()
out = {"import_s": t1 - t0}

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        t = time.perf_counter()
        ex = DockerCommandLineCodeExecutor(image=sys.argv[1], work_dir=tmp, timeout=60)
        await ex.start()
        t2 = time.perf_counter()
        r = await ex.execute_code_blocks([CodeBlock(code="print(1+1)", language="python")], CancellationToken())
        t3 = time.perf_counter()
        assert r.exit_code == 0 and r.output.strip() == "2", r
        await ex.stop()
        out.update(create_s=t2 - t, first_s=t3 - t2, close_s=time.perf_counter() - t3)

asyncio.run(main())
print(json.dumps(out))
"""

LLM_SANDBOX = """
import json, sys, time
t0 = time.perf_counter()
from llm_sandbox import SandboxSession
t1 = time.perf_counter()
t = time.perf_counter()
s = SandboxSession(lang="python", image=sys.argv[1], workdir="/tmp", skip_environment_setup=True,
                   runtime_configs={"command": ["sleep", "infinity"]}, verbose=False)
s.open()
t2 = time.perf_counter()
r = s.run("print(1+1)")
t3 = time.perf_counter()
assert r.exit_code == 0 and r.stdout.strip() == "2", r
s.close()
print(json.dumps({"import_s": t1 - t0, "create_s": t2 - t, "first_s": t3 - t2, "close_s": time.perf_counter() - t3}))
"""


def _process(code: str, *args: str) -> dict[str, float]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-800:])
    out: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def _cases(tmp: Path) -> dict[str, Any]:
    def ours(prestart: str, think_s: float = 0.0) -> Any:
        def go(i: int) -> dict[str, float]:
            where = f"{prestart}-{think_s}-{i}"
            return _process(OURS, str(tmp / f"ws-{where}"), str(tmp / f"st-{where}"), prestart, str(think_s))

        return go

    return {
        "agent_legs_prestart": ours("auto"),
        "agent_legs_no_prestart": ours("false"),
        "agent_legs_prestart_model_think_1s": ours("auto", THINK_S),
        "agent_legs_no_prestart_model_think_1s": ours("false", THINK_S),
        "autogen_ext_DockerCommandLineCodeExecutor": lambda i: _process(AUTOGEN, IMAGE),
        "llm_sandbox_SandboxSession": lambda i: _process(LLM_SANDBOX, IMAGE),
    }


def create_to_first_command(rounds: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp))
        for i in range(rounds):
            for name, case in cases.items():
                if name in errors:
                    continue
                try:
                    samples.setdefault(name, []).append(case(i))
                except Exception as exc:  # a peer not installed (or failing) does not cost the others
                    errors[name] = f"{type(exc).__name__}: {str(exc)[-300:]}"
    first = {n: summarize([s["create_s"] + s["first_s"] for s in v]) for n, v in samples.items() if v}
    parts = {
        n: {k: summarize([s[k] for s in v]) for k in ("import_s", "create_s", "first_s", "close_s", "process_s")}
        for n, v in samples.items()
        if v
    }
    return {"create_plus_first_command": first, "parts": parts, **({"errors": errors} if errors else {})}


def close_repeated(n: int) -> dict[str, Any]:
    from agent_legs import Legs
    from agent_legs.actions.code import _reaper

    closes, firsts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            t = time.perf_counter()
            legs = Legs(Path(tmp) / f"ws{i}", Path(tmp) / f"st{i}", policy={"allow": ["code.*"]})
            r = legs.run("code.run", {"code": "print(1+1)"})
            firsts.append(time.perf_counter() - t)
            assert r.ok, r
            t = time.perf_counter()
            legs.close()
            closes.append(time.perf_counter() - t)
        t = time.perf_counter()
        left = _reaper.drain()
        drained = time.perf_counter() - t
    return {
        "legs_close": summarize(closes),
        "legs_plus_first_call_in_process": summarize(firsts),
        "removals_waited_at_the_end_ms": round(drained * 1000, 1),
        "containers_left_after_drain": len(left),
    }


def run(iterations: int, smoke: bool = False) -> dict[str, Any]:
    from agent_legs.actions.code._sandbox import build_image

    build_image(IMAGE, progress=lambda m: None)  # same image for everyone; a no-op when up to date
    rounds = 1 if smoke else max(3, min(iterations // 100, 7))
    result: dict[str, Any] = {"new_process": create_to_first_command(rounds)}
    result["close_repeated"] = close_repeated(3 if smoke else max(10, min(iterations // 25, 20)))
    ours = result["new_process"]["create_plus_first_command"].get("agent_legs_prestart")
    close = result["close_repeated"]["legs_close"]
    result["targets"] = {
        "legs_plus_first_code_run_new_process_p50_ms<=300": bool(ours) and ours["p50_us"] <= 300_000,
        "legs_close_p95_ms<=100": close["p95_us"] <= 100_000,
        "no_container_left": result["close_repeated"]["containers_left_after_drain"] == 0,
    }
    result["notes"] = (
        "whole new processes in alternating rounds; create_plus_first_command: Legs() + the first code.run "
        "(after the import), or a peer's start + its first command; parts: import, create, first command, "
        "close/stop, and the whole process wall time from outside (start-up, imports, exit)"
    )
    return result
